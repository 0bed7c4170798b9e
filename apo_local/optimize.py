"""The one obvious way in: ``optimize(config, out=...)`` -> ``RunResult``.

    import apo_local as apo
    cfg = apo.build_config({"task": "liar", "search": {"rounds": 2}})
    result = apo.optimize(cfg, out="runs/demo")
    print(result.best_prompt, result.best_test["metrics"])
"""

from __future__ import annotations

import logging
from pathlib import Path

from apo_local.config import RunConfig, dump_config, load_config
from apo_local.engine import RoleEngine, Trace, load_engine
from apo_local.run_dir import RunDir
from apo_local.search import BeamSearch, RunResult
from apo_local.tasks import Task, load_task

log = logging.getLogger("apo_local")


def engines_for(cfg: RunConfig, trace: Trace) -> tuple[RoleEngine, RoleEngine]:
    """Target and optimizer engines; one shared engine when both roles name the same model."""
    cache = False if cfg.cache == "off" else cfg.cache
    target = load_engine(cfg.target.settings(cfg.seed), cache)
    optimizer = load_engine(cfg.optimizer_engine_config().settings(cfg.seed), cache)
    return RoleEngine(target, "target", trace), RoleEngine(optimizer, "optimizer", trace)


def optimize(cfg: RunConfig, out: str | Path | None = None, *, task: Task | None = None,
             overwrite: bool = False) -> RunResult:
    """Run a search; with ``out``, write a run directory there (refused if it holds another run)."""
    run_dir = RunDir(out) if out else None
    if run_dir:
        run_dir.open(dump_config(cfg), overwrite=overwrite)
    try:
        return _run(cfg, run_dir, task)
    finally:
        if run_dir:
            run_dir.close()


def resume(out: str | Path) -> RunResult:
    """Continue an interrupted run from its checkpoint; ends with the same results as an uninterrupted run."""
    run_dir = RunDir(out)
    run_dir.open("", resume=True)
    try:
        cfg = load_config(run_dir.config)
        return _run(cfg, run_dir, None)
    finally:
        run_dir.close()


def _run(cfg: RunConfig, run_dir: RunDir | None, task: Task | None) -> RunResult:
    task = task or load_task(cfg.task)
    trace = Trace(run_dir.trace if run_dir else None)
    target, optimizer = engines_for(cfg, trace)
    return BeamSearch(task, target, optimizer, cfg, run_dir).run()
