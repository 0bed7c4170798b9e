"""The sweep directory's bookkeeping: ``cells.json`` (every cell, its labels and status) and the lock.

``MANIFEST`` is what marks a directory as a sweep (``apo-local report`` looks for it).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from apo_local.experiments.sweep.grid import Cell
from apo_local.support.errors import ApoError
from apo_local.support.files import write_json

MANIFEST = "cells.json"
SWEEP_CONFIG = "sweep.yaml"


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def write_manifest(out: Path, cells: list[Cell], status: dict[str, str]) -> None:
    """Every cell with its status; a cell with results.json is "done" unless it failed this time."""
    write_json(
        out / MANIFEST,
        {
            "cells": [
                {
                    "id": c.id,
                    "method": c.method,
                    "overrides": c.overrides,
                    "labels": c.labels,
                    "status": "done"
                    if (out / c.id / "results.json").is_file() and not status[c.id].startswith("failed")
                    else status[c.id],
                }
                for c in cells
            ]
        },
    )


def load_manifest(out: str | Path) -> list[dict]:
    p = Path(out) / MANIFEST
    if not p.is_file():
        raise ApoError(f"{out} is not a sweep directory (no {MANIFEST})")
    return json.loads(p.read_text(encoding="utf-8"))["cells"]


class SweepLock:
    """One sweep process per directory (``.sweep.lock``, advisory; released with the process)."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = os.open(out / ".sweep.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ApoError(f"{out} is in use by another apo-local sweep") from None

    def close(self) -> None:
        os.close(self.fd)
