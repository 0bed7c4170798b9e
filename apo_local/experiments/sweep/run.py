"""``run_sweep``: expand the grid, lock the directory, run the cells (in-process or on Ray), write the tables."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from apo_local.experiments.sweep.cell import initial_status
from apo_local.experiments.sweep.engines import order_for_engines
from apo_local.experiments.sweep.grid import Cell, expand
from apo_local.experiments.sweep.local import run_local
from apo_local.experiments.sweep.manifest import SWEEP_CONFIG, SweepLock, write_manifest
from apo_local.experiments.sweep.spec import SweepConfig
from apo_local.experiments.sweep.tables import write_tables
from apo_local.support.files import atomic_write

log = logging.getLogger("apo_local")


@dataclass
class SweepResult:
    out: Path
    cells: list[Cell]
    status: dict[str, str]  # cell id -> skipped / ran / resumed / failed: ...
    rows: list[dict]

    @property
    def failed(self) -> list[str]:
        return [c for c, s in self.status.items() if s.startswith("failed")]


def run_sweep(
    spec: SweepConfig,
    base: dict,
    out: str | Path,
    *,
    use_ray: bool = False,
    origin: str = "sweep",
    on_cell: Callable[[Cell, str], None] | None = None,
) -> SweepResult:
    """Run every cell that has no results yet; write the manifest and the results tables."""
    out = Path(out)
    cells = order_for_engines(expand(spec, base, origin))
    on_ray = use_ray or bool(spec.ray.address)
    lock = SweepLock(out)
    try:
        os.chmod(out, 0o700)
        atomic_write(
            out / SWEEP_CONFIG,
            yaml.safe_dump({**spec.model_dump(mode="json", exclude={"base"}), "base": base}, sort_keys=False),
        )
        status = {c.id: initial_status(out / c.id) for c in cells}
        write_manifest(out, cells, status)
        log.info(
            "sweep: %d cells (%d done) in %s%s",
            len(cells),
            sum(s == "done" for s in status.values()),
            out,
            " on Ray" if on_ray else "",
        )
        if on_ray:
            from apo_local.experiments.sweep.ray_runner import run_on_ray

            run_on_ray(spec.ray, cells, out, status, on_cell)
        else:
            run_local(cells, out, status, on_cell)
        write_manifest(out, cells, status)
        return SweepResult(out, cells, status, write_tables(out))
    finally:
        lock.close()
