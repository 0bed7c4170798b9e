"""One cell = one ordinary run directory: skip it when finished, resume it when interrupted, else run it.

Shared by sweeps (``DIR/<cell id>/``) and comparisons (``DIR/<method>/seed-<s>/``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from apo_local.experiments.sweep.engines import engine_keys
from apo_local.run.config import build_config
from apo_local.support.errors import ApoError

log = logging.getLogger("apo_local")

_HELD: frozenset = frozenset()  # engine keys the previous cell of this process used


def initial_status(d: Path) -> str:
    """ "done" (results.json), "interrupted" (a checkpoint) or "pending" (nothing usable yet)."""
    if (d / "results.json").is_file():
        return "done"
    return "interrupted" if (d / "checkpoint.json").is_file() else "pending"


def run_cell(cell_dir: str | Path, config_text: str, release: bool = True) -> str:
    """Run, resume or skip one cell; returns "skipped", "resumed" or "ran". Frees the engines the
    previous cell of this process used when this one needs others (``release``)."""
    global _HELD
    from apo_local.run.optimize import optimize, resume

    d = Path(cell_dir)
    if (d / "results.json").is_file():
        return "skipped"
    cfg = build_config(yaml.safe_load(config_text), origin=str(d / "config.yaml"))
    if (d / "config.yaml").is_file():
        on_disk = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
        if on_disk != yaml.safe_load(config_text):
            raise ApoError(f"{d} holds a run with a different config; move it away or use another --out")
    keys = engine_keys(cfg)
    if release and _HELD and not _HELD <= keys:
        from apo_local.engine import shutdown_engines

        log.info("releasing the previous cell's engines")
        shutdown_engines()
    _HELD = keys
    if (d / "checkpoint.json").is_file():
        resume(d)
        return "resumed"
    optimize(cfg, d, overwrite=True)  # overwrite: a run that died before its first checkpoint
    return "ran"
