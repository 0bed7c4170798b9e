"""The Ray runner: every cell a Ray task asking for its tensor-parallel size in GPUs (none on CPU).

On CPU a worker is reused and keeps its engines for the next cell of the same (target, optimizer)
pair; on GPUs each cell gets a fresh worker (Ray's rule for GPU tasks), so GPU memory is always
given back. Finished cells come back as archives when the driver cannot see the worker's files.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apo_local.experiments.sweep.cell import run_cell
from apo_local.experiments.sweep.engines import gpus_for
from apo_local.experiments.sweep.grid import Cell
from apo_local.experiments.sweep.manifest import write_manifest
from apo_local.experiments.sweep.packing import pack, unpack
from apo_local.experiments.sweep.spec import RayOptions
from apo_local.support.errors import ApoError

log = logging.getLogger("apo_local")


def ray_cell(cell_dir: str, config_text: str, ship_back: bool) -> dict:
    """Body of the Ray task: runs in a worker process (which keeps its engines for the next cell)."""
    t0 = time.time()
    status = run_cell(cell_dir, config_text)
    out = {"status": status, "seconds": round(time.time() - t0, 1), "node": os.uname().nodename}
    if ship_back and status != "skipped":
        out["archive"] = pack(Path(cell_dir))
    return out


def _start_ray(opts: RayOptions):
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage statistics (read by ray.init)
    try:
        import ray
    except ImportError:
        raise ApoError("--ray needs Ray: pip install 'apo-local[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=opts.address, include_dashboard=False, logging_level=logging.WARNING)
    return ray


def _submit(ray, opts: RayOptions, cells: list[Cell], out: Path, status: dict[str, str]) -> dict[Any, Cell]:
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    # CPU cells: a worker is reused, and keeps its engines for the next cell of the same pair.
    # GPU cells: one cell per worker (Ray's default for GPU tasks), so GPU memory is always released.
    remote_cpu, remote_gpu = ray.remote(ray_cell), ray.remote(max_calls=1)(ray_cell)
    pending: dict[Any, Cell] = {}
    for cell in cells:
        if status[cell.id] == "done":
            continue
        g = opts.num_gpus_per_cell
        gpus = (gpus_for(cell.config) if has_gpus else 0) if g == "auto" else int(g)
        task = (remote_gpu if gpus else remote_cpu).options(
            num_gpus=gpus, num_cpus=opts.num_cpus_per_cell, name=f"apo-cell:{cell.id}", max_retries=0
        )
        pending[task.remote(str((out / cell.id).resolve()), cell.config_text, opts.ship_back)] = cell
        status[cell.id] = "queued"
    return pending


def _collect(ray, ref, cell: Cell, out: Path, status: dict[str, str]) -> None:
    try:
        res = ray.get(ref)
        if "archive" in res and not (out / cell.id / "results.json").is_file():
            unpack(res["archive"], out / cell.id)
        status[cell.id] = res["status"]
        log.info("cell %s: %s on %s in %ss", cell.id, res["status"], res["node"], res["seconds"])
    except Exception as exc:  # RayTaskError wraps the cell's own exception
        cause = getattr(exc, "cause", None) or exc
        msg = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
        status[cell.id] = f"failed: {msg}"
        log.error("cell %s failed: %s", cell.id, msg)


def run_on_ray(
    opts: RayOptions,
    cells: list[Cell],
    out: Path,
    status: dict[str, str],
    on_cell: Callable[[Cell, str], None] | None = None,
) -> None:
    """Submit every cell not done yet, record each as it finishes; Ctrl-C cancels the rest."""
    if all(status[c.id] == "done" for c in cells):
        return
    ray = _start_ray(opts)
    pending = _submit(ray, opts, cells, out, status)
    write_manifest(out, cells, status)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            _collect(ray, done[0], cell, out, status)
            write_manifest(out, cells, status)
            if on_cell:
                on_cell(cell, status[cell.id])
    except BaseException:
        for ref, cell in pending.items():
            ray.cancel(ref)
            status[cell.id] = "interrupted"
        write_manifest(out, cells, status)
        raise
