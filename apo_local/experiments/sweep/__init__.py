"""Sweeps: a grid of runs (tasks x methods x target models x optimizer models x seeds x any key).

    apo-local sweep --config configs/sweep-example.yaml --out runs/sweep [--ray]

A sweep config::

    name: liar-small                 # optional
    base: {...run config...}         # or a path to a run config YAML (relative to this file)
    grid:                            # cartesian product; every key is a dotted run-config key
      task: [liar]
      target.model: [smollm2-135m]
      optimizer.model: [null, /models/Qwen2.5-7B-Instruct]
      seed: [0, 1]
    methods:                         # optional: named override sets, one more grid axis ("method")
      protegi: {}
      protegi-sh: {selection.selector: successive-halving}
    ray: {address: null, num_gpus_per_cell: auto, num_cpus_per_cell: 1}

Each cell is an ordinary run directory ``DIR/<slug>-<hash>`` (the hash is of the cell's resolved
config, so editing ``base`` makes new cells instead of mixing runs). Re-running the same command
skips completed cells (``results.json``), resumes interrupted ones (``checkpoint.json``) and starts
the rest. ``DIR/results.csv`` and ``DIR/results.md`` hold one row per cell plus mean +- std per group
(every axis but the seed); when the grid varies ``optimizer.model`` they also get the optimizer-size
view (``optimizer-size.csv``, ``optimizer-size.png``).

In-process, cells run one after another, ordered so that cells that need the same engines are
adjacent: engines load once per (target, optimizer) pair, and are released when the next group
needs others. With ``--ray`` (or ``ray.address``) every cell is a Ray task asking for as many GPUs
as its tensor-parallel size (none on CPU). Ray is optional (``pip install 'apo-local[ray]'``); its
usage statistics are switched off before it starts. On a multi-node cluster the workers need
apo-local installed; if they do not share DIR's filesystem, finished cells are shipped back to the
driver as archives.

Modules, one concept each (read in this order): ``spec`` (the config file), ``grid`` (cells),
``engines`` (grouping cells by engine), ``cell`` (run / resume / skip one run directory, also used by
``apo_local.experiments.compare``), ``manifest`` (cells.json and the lock), ``run`` (``run_sweep``), ``local`` and
``ray_runner`` (the two runners), ``packing`` (cells as archives), ``tables`` / ``markdown`` /
``size_view`` / ``params`` (results files), ``cli`` (the command). This package sits below
``apo_local.report`` and never imports it.
"""

from __future__ import annotations

from apo_local.experiments.sweep.cell import initial_status, run_cell
from apo_local.experiments.sweep.engines import engine_keys, gpus_for, order_for_engines
from apo_local.experiments.sweep.grid import Cell, expand
from apo_local.experiments.sweep.manifest import MANIFEST, SWEEP_CONFIG, is_sweep_dir, load_manifest
from apo_local.experiments.sweep.params import human_params, model_parameters
from apo_local.experiments.sweep.run import SweepResult, run_sweep
from apo_local.experiments.sweep.size_view import optimizer_size_rows
from apo_local.experiments.sweep.spec import RayOptions, SweepConfig, load_sweep, parse_sweep
from apo_local.experiments.sweep.tables import aggregate, cell_rows, group_columns, write_tables

__all__ = [
    "MANIFEST",
    "SWEEP_CONFIG",
    "Cell",
    "RayOptions",
    "SweepConfig",
    "SweepResult",
    "aggregate",
    "cell_rows",
    "engine_keys",
    "expand",
    "gpus_for",
    "group_columns",
    "human_params",
    "initial_status",
    "is_sweep_dir",
    "load_manifest",
    "load_sweep",
    "model_parameters",
    "optimizer_size_rows",
    "order_for_engines",
    "parse_sweep",
    "run_cell",
    "run_sweep",
    "write_tables",
]
