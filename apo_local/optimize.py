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
from apo_local.engine import RoleEngine, Trace, load_role_engines
from apo_local.errors import ApoError
from apo_local.run_dir import RunDir
from apo_local.search import BeamSearch, RunResult
from apo_local.tasks import Task, load_task

log = logging.getLogger("apo_local")


def engines_for(cfg: RunConfig, trace: Trace) -> tuple[RoleEngine, RoleEngine]:
    """Target and optimizer engines; one shared engine when both roles name the same model."""
    cache = False if cfg.cache == "off" else cfg.cache
    record = trace.path.parent / "engines.json" if trace.path else None  # the run directory's engine plan
    target, optimizer = load_role_engines(cfg.target.settings(cfg.seed), cfg.optimizer_engine_config().settings(cfg.seed),
                                          cache, record)
    return RoleEngine(target, "target", trace), RoleEngine(optimizer, "optimizer", trace)


def optimize(cfg: RunConfig, out: str | Path | None = None, *, task: Task | None = None,
             overwrite: bool = False) -> RunResult:
    """Run a search; with ``out``, write a run directory there (refused if it holds another run)."""
    task = task or load_task(cfg.task)
    preflight(cfg, task)  # bad input fails here: no run directory written, no engine started
    run_dir = RunDir(out) if out else None
    if run_dir:
        run_dir.open(dump_config(cfg), overwrite=overwrite)
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
        cfg = load_config(run_dir.config)
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
    from apo_local.search.beam import _selector_params, hash_key
    from apo_local.search.proposers import make_proposer
    from apo_local.search.selectors import make_selector

    for role, engine_cfg in (("target", cfg.target), ("optimizer", cfg.optimizer_engine_config())):
        try:
            resolve_model(engine_cfg.model)
        except ApoError as exc:
            raise ApoError(f"{role}.model: {exc}") from None
    make_proposer(cfg.search.proposer)
    make_selector(cfg.selection.selector, **_selector_params(cfg))
    for name, file in cfg.meta_prompts.model_dump().items():
        if file and not Path(file).is_file():
            raise ApoError(f"meta_prompts.{name}: file {file} does not exist")

    train = task.check_split("train")
    if cfg.train_limit:
        if cfg.train_limit < cfg.search.minibatch_size:
            raise ApoError(f"train_limit ({cfg.train_limit}) is smaller than search.minibatch_size "
                           f"({cfg.search.minibatch_size}); raise train_limit or lower minibatch_size")
        subset = sorted(train, key=lambda ex: hash_key(cfg.seed, ex.id))[: cfg.train_limit]
        if task.kind == "classification" and len({ex.label for ex in subset}) < 2:
            raise ApoError(f"the first train_limit={cfg.train_limit} training examples hold only one class; "
                           f"raise train_limit")
    task.check_split("train", min_size=cfg.search.minibatch_size, size_name="search.minibatch_size")
    test_split, test_limit = cfg.evaluation.test_split, cfg.evaluation.test_limit
    task.check_split(test_split, min_size=test_limit or 1,
                     size_name="evaluation.test_limit" if test_limit else "the minimum")
