"""Model size for the optimizer-size view: parameters counted from safetensors headers (no weights read)."""

from __future__ import annotations

import json
import math
import struct


def model_parameters(row: dict, label: str) -> int | None:
    """Parameter count of the optimizer ``label`` of a results row (None if unknown).

    ``label`` "= target" means the row's target model; "default" the registry default."""
    from apo_local.models.registry import resolve_model

    name = row["target"] if label == "= target" else label
    try:
        folder = resolve_model(None if name == "default" else name, prepare_if_missing=False)
    except Exception:
        return None
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with open(f, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total or None


def human_params(n: int | None) -> str:
    """135M, 7.6B; "?" when unknown."""
    if not n:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"
