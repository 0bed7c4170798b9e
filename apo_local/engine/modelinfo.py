"""What a model folder says about itself, read from its files without loading it: identity,
context length, weight bytes (safetensors headers) and the KV-cache bytes per token; and, from its loaded
config, the context length and end-of-sequence ids the transformers backend uses."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F4": 1,
}


def model_fingerprint(path: Path) -> str:
    """Identity of a model folder: its name plus a hash of its config and weight sizes."""
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.name == "config.json":
            h.update(f.read_bytes())
        elif f.suffix in {".safetensors", ".bin", ".json", ".model"}:
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"{Path(path).name}@{h.hexdigest()[:12]}"


def model_config(path: Path) -> dict:
    try:
        cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    text = cfg.get("text_config")  # multimodal wrappers keep the language model's fields here
    return {**text, **{k: v for k, v in cfg.items() if k != "text_config"}} if isinstance(text, dict) else cfg


def context_length(path: Path) -> int | None:
    """The model's own context length from config.json, or None."""
    cfg = model_config(path)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = cfg.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return None


def weight_bytes(path: Path) -> int:
    """Bytes of the weights as stored: summed from the safetensors headers (no tensor is read);
    the file sizes for other formats."""
    total = 0
    for f in sorted(Path(path).glob("*.safetensors")):
        try:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            total += f.stat().st_size
            continue
        for name, t in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for d in t.get("shape", []):
                count *= d
            total += count * _DTYPE_BYTES.get(t.get("dtype"), 2)
    if total == 0:
        total = sum(f.stat().st_size for f in Path(path).glob("*.bin"))
    return total


def kv_bytes_per_token(path: Path, dtype_bytes: int = 2) -> int | None:
    """KV-cache bytes one token of context takes (all layers, keys and values), or None if the
    config does not say."""
    cfg = model_config(path)
    layers, heads = cfg.get("num_hidden_layers"), cfg.get("num_attention_heads")
    hidden = cfg.get("hidden_size")
    if not all(isinstance(x, int) and x > 0 for x in (layers, heads, hidden)):
        return None
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def loaded_context_length(config, wanted: int | None) -> int:
    """The settings' ``max_model_len`` within the model's own limit (2048 when neither bounds it)."""
    limit = None
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None) or getattr(config.get_text_config(), name, None)
        if isinstance(value, int) and value > 0:
            limit = value
            break
    max_len = min(wanted or math.inf, limit if limit is not None else math.inf)
    return 2048 if max_len == math.inf else int(max_len)


def eos_ids(model, config, tokenizer) -> set[int]:
    """Every end-of-sequence id the generation config, model config or tokenizer names."""
    eos: set[int] = set()
    for src in (getattr(model, "generation_config", None), config, tokenizer):
        value = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, (list, tuple)):
            eos.update(v for v in value if isinstance(v, int))
    return eos
