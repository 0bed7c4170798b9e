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
from apo_local.errors import ApoError
from apo_local.run_dir import RunDir, write_json
from apo_local.search import BeamSearch, RunResult
from apo_local.search.estimate import estimate
from apo_local.search.splits import eval_rows, train_rows
from apo_local.tasks import Task, load_task

log = logging.getLogger("apo_local")


def engines_for(cfg: RunConfig, trace: Trace) -> tuple[RoleEngine, RoleEngine]:
    """Target and optimizer engines; one shared engine when both roles name the same model."""
    cache = False if cfg.cache == "off" else cfg.cache
    target = load_engine(cfg.target.settings(cfg.seed), cache)
    optimizer = load_engine(cfg.optimizer_engine_config().settings(cfg.seed), cache)
    return RoleEngine(target, "target", trace), RoleEngine(optimizer, "optimizer", trace)


def optimize(cfg: RunConfig, out: str | Path | None = None, *, task: Task | None = None,
             overwrite: bool = False, on_estimate=None) -> RunResult:
    """Run a search; with ``out``, write a run directory there (refused if it holds another run).

    Before any engine starts, the search's size (``search/estimate.py``) is logged, or handed to
    ``on_estimate(estimate)``, and written to the run directory as ``estimate.json``."""
    task = task or load_task(cfg.task)
    preflight(cfg, task)  # bad input fails here: no run directory written, no engine started
    size = estimate(cfg, task, train_rows(task, cfg), eval_rows(task, cfg))
    run_dir = RunDir(out) if out else None
    if run_dir:
        run_dir.open(dump_config(cfg), overwrite=overwrite)
        write_json(run_dir.path / "estimate.json", size.to_dict())
    (on_estimate or (lambda e: [log.info(line) for line in e.lines()]))(size)
    try:
        return _run(cfg, run_dir, task)
    except ApoError:
        if run_dir:
            run_dir.discard()  # e.g. the engine did not start: leave no half run behind
        raise
    finally:
        if run_dir:
            run_dir.close()


def resume(out: str | Path) -> RunResult:
    """Continue an interrupted run from its checkpoint; ends with the same results as an uninterrupted run."""
    run_dir = RunDir(out)
    run_dir.open("", resume=True)
    try:
        cfg = load_config(run_dir.config, resume=True)  # a run of an earlier version: its keys migrated
        return _run(cfg, run_dir, None)
    finally:
        run_dir.close()


def _run(cfg: RunConfig, run_dir: RunDir | None, task: Task | None) -> RunResult:
    task = task or load_task(cfg.task)
    preflight(cfg, task)
    trace = Trace(run_dir.trace if run_dir else None)
    target, optimizer = engines_for(cfg, trace)
    # Over-long examples are cut in the middle to fit the target's context (tasks.task.LengthLimit),
    # leaving room for the answer; each cut is counted as an "example_truncated" fault.
    task.limit_length(target.count_tokens, target.max_model_len - max(16, cfg.scoring.max_tokens),
                      lambda ex, before, after: trace.event("example_truncated", example=ex.id,
                                                            tokens_before=before, tokens_after=after))
    return BeamSearch(task, target, optimizer, cfg, run_dir).run()


def preflight(cfg: RunConfig, task: Task) -> None:
    """Every check that needs no engine, before any engine starts or any file is written.

    Unknown proposer / selector (or selector parameter), missing meta-prompt files, and splits
    that are empty, single-class, or smaller than what the config asks of them end here as one
    ``ApoError`` line naming the split and the config key.
    """
    from apo_local.models import resolve_model
    from apo_local.search.beam import make_acceptance
    from apo_local.search.proposers import make_proposer

    for role, engine_cfg in (("target", cfg.target), ("optimizer", cfg.optimizer_engine_config())):
        try:
            resolve_model(engine_cfg.model)
        except ApoError as exc:
            raise ApoError(f"{role}.model: {exc}") from None
    make_proposer(cfg.search.proposer, cfg)
    make_acceptance(cfg)
    for name, file in cfg.meta_prompts.model_dump().items():
        if file and not Path(file).is_file():
            raise ApoError(f"meta_prompts.{name}: file {file} does not exist")
    train_rows(task, cfg)
    eval_rows(task, cfg)
