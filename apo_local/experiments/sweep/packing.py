"""A finished cell as a gzipped tar, for Ray workers that do not share the driver's filesystem."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def pack(d: Path) -> bytes:
    """Every file of the run directory ``d`` (not its lock), paths relative to ``d``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.name != ".lock":
                tar.add(p, arcname=str(p.relative_to(d)))
    return buf.getvalue()


def unpack(data: bytes, d: Path) -> None:
    """Recreate the run directory at ``d`` (user-only permissions; tar's safe "data" filter)."""
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    (d / "rounds").mkdir(exist_ok=True, mode=0o700)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(d, filter="data")
