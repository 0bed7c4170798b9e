"""Reports people look at: ``apo-local report RUN_DIR_OR_SWEEP_DIR``.

Writes ``report.html`` (self-contained: plots are embedded, nothing is fetched; it opens offline)
and the same plots as PNG files under ``plots/``.

Run directory: score per round with the initial prompt as a baseline; the candidate lineage
(parent -> child, operator, gradient text); the initial -> best prompt diff; predicted vs true label
distribution and confusion matrix for classification, with a warning when a class is predicted far
below its true share ("prevalence hacking"); calls, tokens and time by role and phase; prompt
length per round. Sweep directory: the results table (cells and mean +- std per group), test
metric per cell, and the optimizer-size view when the grid varies the optimizer model.

Modules: ``data`` (reading a run directory), ``plots`` (matplotlib figures), ``html`` (the page),
``run_page`` and ``sweep_page`` (what each page shows), ``cli`` (the command). This package reads
sweeps through ``apo_local.experiments.sweep`` (which never imports it).
"""

from __future__ import annotations

from pathlib import Path

from apo_local.support.errors import ApoError

__all__ = ["write_report", "write_run_report", "write_sweep_report"]


def _need_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ApoError("reports need matplotlib: pip install matplotlib (or reinstall apo-local)") from None


def write_report(path: str | Path, *, cells: bool = False) -> Path | list[Path]:
    """Report for a run directory or a sweep directory (``cells``: also each cell's own report); for a
    ``compare`` directory, each of its runs' reports (its tables are its results.md)."""
    from apo_local.experiments.sweep.manifest import is_sweep_dir
    from apo_local.run.run_dir import compare_runs, is_compare_dir

    p = Path(path)
    if not p.is_dir():
        raise ApoError(f"{p} is not a directory")
    _need_matplotlib()
    if is_sweep_dir(p):
        return write_sweep_report(p, cells=cells)
    if is_compare_dir(p):
        runs = compare_runs(p)
        if not runs:
            raise ApoError(f"{p} is a compare directory without finished runs yet (METHOD/seed-N)")
        return [write_run_report(d) for d in runs]
    return write_run_report(p)


def write_run_report(path: str | Path) -> Path:
    from apo_local.report.run_page import write_run_report as write

    return write(path)


def write_sweep_report(path: str | Path, *, cells: bool = False) -> Path:
    from apo_local.report.sweep_page import write_sweep_report as write

    return write(path, cells=cells)
