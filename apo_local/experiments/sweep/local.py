"""The in-process runner: cells one after another in this process, engines reused between them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from apo_local.experiments.sweep.cell import run_cell
from apo_local.experiments.sweep.grid import Cell
from apo_local.experiments.sweep.manifest import write_manifest
from apo_local.support.errors import ApoError

log = logging.getLogger("apo_local")


def run_local(
    cells: list[Cell], out: Path, status: dict[str, str], on_cell: Callable[[Cell, str], None] | None = None
) -> None:
    """Run every cell not done yet, in order; a failing cell is recorded and the others go on.

    ``cells`` come ordered by ``order_for_engines``, so ``run_cell`` loads each engine pair once."""
    for i, cell in enumerate(cells, 1):
        if status[cell.id] == "done":
            continue
        log.info("cell %d/%d: %s", i, len(cells), cell.id)
        status[cell.id] = "running"
        write_manifest(out, cells, status)
        try:
            status[cell.id] = run_cell(out / cell.id, cell.config_text)
        except ApoError as exc:
            status[cell.id] = f"failed: {exc}"
            log.error("cell %s failed: %s", cell.id, exc)
        except Exception as exc:  # an engine or a bug: record it, go on with the other cells
            status[cell.id] = f"failed: {type(exc).__name__}: {exc}".splitlines()[0]
            log.exception("cell %s failed", cell.id)
        except BaseException:  # Ctrl-C: stop; the same command resumes
            status[cell.id] = "interrupted"
            write_manifest(out, cells, status)
            raise
        write_manifest(out, cells, status)
        if on_cell:
            on_cell(cell, status[cell.id])
