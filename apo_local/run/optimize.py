"""The one obvious way in: ``optimize(config, out=...)`` -> ``RunResult``.

import apo_local as apo
cfg = apo.build_config({"task": "liar", "search": {"rounds": 1}}, preset="smoke")
result = apo.optimize(cfg, out="runs/demo", overwrite=True)
print(result.selected_prompt, result.selected_test["metrics"])  # the prompt to deploy, its test scores
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from apo_local.run import tracking
from apo_local.run.config import RunConfig, dump_config, load_config
from apo_local.engine import RoleEngine, Trace, load_role_engines, role_models
from apo_local.run.run_dir import RunDir, write_json
from apo_local.scoring import limit_length
from apo_local.run.result import RunResult
from apo_local.search import BeamSearch
from apo_local.run.estimate import estimate, record_throughput
from apo_local.search.proposers import make_proposer, target_answer
from apo_local.search.splits import eval_rows, train_rows, validation_rows, validation_warning
from apo_local.search.state import Phase, RunState
from apo_local.support.errors import ApoError
from apo_local.tasks import Task, load_task
from apo_local.tasks.judge import attach_judge

log = logging.getLogger("apo_local")


def engines_for(cfg: RunConfig, trace: Trace) -> tuple[RoleEngine, RoleEngine]:
    """Target and optimizer engines; one shared engine when both roles name the same model."""
    cache = False if cfg.cache == "off" else cfg.cache
    record = trace.path.parent / "engines.json" if trace.path else None  # the run directory's engine plan
    target, optimizer = load_role_engines(
        cfg.target.settings(cfg.seed), cfg.optimizer_engine_config().settings(cfg.seed), cache, record
    )
    return RoleEngine(target, "target", trace), RoleEngine(optimizer, "optimizer", trace)


def optimize(
    cfg: RunConfig,
    out: str | Path | None = None,
    *,
    task: Task | None = None,
    overwrite: bool = False,
    on_estimate=None,
) -> RunResult:
    """Run a search; with ``out``, write a run directory there (refused if it holds another run).

    Before any engine starts, the search's size (``run/estimate.py``) is logged, or handed to
    ``on_estimate(estimate)``, and written to the run directory as ``estimate.json``."""
    task = task or load_task(cfg.task)
    cfg = cap_test_limit(cfg, task)
    preflight(cfg, task)  # bad input fails here: no run directory written, no engine started
    size = estimate(cfg, task, train_rows(task, cfg), eval_rows(task, cfg), validation_rows(task, cfg))
    run_dir = RunDir(out) if out else None
    if run_dir:
        run_dir.open(models_comment(run_models(cfg)) + dump_config(cfg), overwrite=overwrite)
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
        saved = RunState.load(run_dir.checkpoint)
        if saved and saved.phase is Phase.DONE and run_dir.results.is_file():
            # Nothing left to compute: the answer is in the run directory, no model needs loading.
            log.info("%s is a finished run; results from its results.json", run_dir.path)
            return RunResult(**json.loads(run_dir.results.read_text(encoding="utf-8")))
        cfg = load_config(run_dir.config, resume=True)  # a run of an earlier version: its keys migrated
        return _run(cfg, run_dir, None)
    finally:
        run_dir.close()


def _run(cfg: RunConfig, run_dir: RunDir | None, task: Task | None) -> RunResult:
    started = time.perf_counter()
    task = task or load_task(cfg.task)
    cfg = cap_test_limit(cfg, task)
    preflight(cfg, task)
    for split in dict.fromkeys(("train", cfg.evaluation.test_split)):
        _log_label_mapping(task, split)
    saved = RunState.load(run_dir.checkpoint) if run_dir else None
    before = saved.elapsed if saved else 0.0  # time spent by earlier processes
    trace = Trace(run_dir.trace if run_dir else None)
    loading = time.perf_counter()
    target, optimizer = engines_for(cfg, trace)
    models, warnings = run_models(cfg), run_warnings(cfg, task)
    attach_judge(task, optimizer, trace)  # metric judge: graded by judge.model, else the optimizer's engine
    model_load = time.perf_counter() - loading
    # Over-long examples are cut in the middle to fit the target's context (tasks.length.LengthLimit),
    # leaving room for the answer; each cut is logged and counted as an "example_truncated" fault.
    limit_length(task, target, max(16, target_answer(cfg).max_tokens), trace)
    tracker = tracking.start(cfg, run_dir.path if run_dir else None)
    on_round = tracking.round_logger(tracker, trace, task.metric.name)
    beam_search = BeamSearch(task, target, optimizer, cfg, run_dir, on_round=on_round)
    result = beam_search.run()
    result.models = models  # which models this run used (also in engines.json and config.yaml's header)
    result.warnings = warnings
    # Where the wall time went (this process; "search" includes earlier processes of a resumed run).
    total = time.perf_counter() - started + before
    search = float(result.time.get("seconds", 0.0))
    final_test = trace.phase_seconds.get("final", 0.0)
    result.time.update(
        total=round(total, 1),
        model_load=round(model_load, 1),
        search=round(search, 1),
        final_test=round(final_test, 1),
        other=round(max(0.0, total - model_load - search - final_test), 1),
    )
    if run_dir:  # predictions, then results.json (written once), then the DONE checkpoint: a kill between any two
        # leaves a checkpoint short of DONE, and resume does the final evaluation again (tests/test_resume_final_e2e.py)
        _write_final_predictions(run_dir, task, cfg, beam_search, result)
        write_json(run_dir.results, result.to_dict())
        beam_search.mark_done()
    tracking.finish(tracker, result, run_dir.path if run_dir else None)
    record_throughput(cfg, trace.totals_dict())  # the next estimate's time figure on this machine
    return result


def run_models(cfg: RunConfig) -> dict:
    """The model each role of ``cfg`` uses: name, alias, folder, weights fingerprint (``engine.model_of``)."""
    return role_models(cfg.target.settings(cfg.seed), cfg.optimizer_engine_config().settings(cfg.seed))


def run_warnings(cfg: RunConfig, task: Task) -> list[str]:
    """What the reader must know before trusting the run's numbers, known before it starts (each logged once):
    a validation split too small to tell prompts apart (``splits.validation_warning``)."""
    found = [w for w in (validation_warning(len(validation_rows(task, cfg))),) if w]
    for w in found:
        log.warning(w)
    return found


def models_comment(models: dict) -> str:
    """config.yaml's header: the models its ``model`` keys resolved to (``model: null`` is the registry default)."""
    lines = []
    for role, m in models.items():
        if role == "optimizer" and m == models.get("target"):
            lines.append("# optimizer model: the target's")
        elif m.get("backend") == "openai":
            lines.append(f"# {role} model: {m['name']} served at {m['base_url']}")
        else:
            name = m["alias"] or m["folder"]
            default = " (the registry default)" if m["name"] is None else ""
            lines.append(f"# {role} model: {name}{default}, folder {m['folder']}, weights {m['fingerprint']}")
    return "\n".join(lines) + "\n"


def cap_test_limit(cfg: RunConfig, task: Task) -> RunConfig:
    """``evaluation.test_limit`` larger than the test split: use the whole split, saying so (as evaluate
    --limit does)."""
    limit, split = cfg.evaluation.test_limit, cfg.evaluation.test_split
    if not limit or split not in task.split_names:
        return cfg
    n = len(task.split(split))
    if limit <= n:
        return cfg
    log.info("evaluation.test_limit=%d is larger than the %s split (%d examples): using all %d", limit, split, n, n)
    return cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"test_limit": n})})


def _log_label_mapping(task: Task, split: str) -> None:
    mapped = task.label_mapping(split) if split in task.split_names else {}
    if mapped:
        log.info(
            "%s split: %d labels mapped to the task's spelling (%s)",
            split,
            sum(mapped.values()),
            ", ".join(f"{k}: {v}" for k, v in mapped.items()),
        )


def _write_final_predictions(
    run_dir: RunDir, task: Task, cfg: RunConfig, beam_search: BeamSearch, result: RunResult
) -> None:
    """predictions/test-initial.jsonl, test-best.jsonl (and test-selected.jsonl when it differs): every
    example of the final test evaluation (from the search's scorer, which remembers them: no engine call)."""
    from apo_local.scoring import prediction_records, search_records, write_predictions

    scorer = beam_search.scorer
    test = task.split(cfg.evaluation.test_split)[: cfg.evaluation.test_limit]
    prompts = {"initial": result.initial_prompt, "best": result.best_prompt, "selected": result.selected_prompt}
    if prompts["selected"] == prompts["best"]:
        del prompts["selected"]
    for name, evaluation in zip(prompts, scorer.evaluate_many(list(prompts.values()), test)):
        write_predictions(
            run_dir.path / "predictions" / f"test-{name}.jsonl", prediction_records(task, test, evaluation)
        )
    if task.kind == "generation":  # every output the search produced, per prompt and example (train and test)
        write_predictions(run_dir.path / "predictions" / "search.jsonl", search_records(task, scorer))


def preflight(cfg: RunConfig, task: Task) -> None:
    """Every check that needs no engine, before any engine starts or any file is written.

    Unknown proposer / selector (or selector parameter), missing meta-prompt files, and splits
    that are empty, single-class, or smaller than what the config asks of them end here as one
    ``ApoError`` line naming the split and the config key.
    """
    from apo_local.models.registry import resolve_model
    from apo_local.search.acceptance import make_acceptance

    for role, engine_cfg in (("target", cfg.target), ("optimizer", cfg.optimizer_engine_config())):
        if (engine_cfg.backend == "openai") != bool(engine_cfg.base_url):
            raise ApoError(
                f"{role}.base_url: "
                + (
                    "the openai backend needs the server's URL"
                    if engine_cfg.base_url is None
                    else f"only for backend openai (now {engine_cfg.backend})"
                )
            )
        if engine_cfg.backend == "openai":
            continue  # the model is a name the server serves, checked when the engine starts
        try:
            resolve_model(engine_cfg.model)
        except ApoError as exc:
            raise ApoError(f"{role}.model: {exc}") from None
    make_proposer(cfg.search.proposer, cfg)
    make_acceptance(cfg)
    tracking.check(cfg)
    for name, file in cfg.meta_prompts.model_dump().items():
        if file and not Path(file).is_file():
            raise ApoError(f"meta_prompts.{name}: file {file} does not exist")
    train_rows(task, cfg)
    validation_rows(task, cfg)
    eval_rows(task, cfg)  # a test_limit beyond the split's size was capped before (cap_test_limit)
