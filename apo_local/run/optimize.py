"""The one obvious way in: ``optimize(config, out=...)`` -> ``RunResult``.

import apo_local as apo
cfg = apo.build_config({"task": "liar", "search": {"rounds": 1}}, preset="smoke")
result = apo.optimize(cfg, out="runs/demo", overwrite=True)
print(result.selected_prompt, result.selected_test["metrics"])  # the prompt to deploy, its test scores

One run, in order: the plan (``run/plan.py``: task, splits, strategies, every check; no engine), the estimate, the
run directory, the engines with the run's ledger and budget gate, the rounds (``search.BeamSearch``, its events
written by ``run/recorder.py``), the final evaluation (``run/finish.py``), then predictions, ``results.json``
(once) and the checkpoint's DONE.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from apo_local.engine import RoleEngine, load_role_engines
from apo_local.ledger import Budget, Trace
from apo_local.run import tracking
from apo_local.run.checkpoint import Checkpoint
from apo_local.run.config import RunConfig, dump_config, load_config
from apo_local.run.estimate import record_throughput
from apo_local.run.finish import Finish
from apo_local.run.plan import RunPlan
from apo_local.run.recorder import RunRecorder
from apo_local.run.result import RunResult
from apo_local.run.run_dir import RunDir, write_json
from apo_local.scoring import Scorer, limit_length
from apo_local.search import BeamSearch
from apo_local.search.acceptance import Acceptance
from apo_local.search.acceptance.length import prompt_tokens
from apo_local.search.events import Recorders
from apo_local.search.proposers import Proposer
from apo_local.search.state import Phase, RunState
from apo_local.support.errors import ApoError
from apo_local.tasks import Task
from apo_local.tasks.judge import attach_judge

log = logging.getLogger("apo_local")


def engines_for(cfg: RunConfig, trace: Trace, budget: Budget | None = None) -> tuple[RoleEngine, RoleEngine]:
    """Target and optimizer engines, one shared engine when both roles name the same model; each call recorded in
    ``trace`` and gated by ``budget``."""
    cache = False if cfg.cache == "off" else cfg.cache
    target, optimizer, placement = load_role_engines(
        cfg.target.settings(cfg.seed), cfg.optimizer_engine_config().settings(cfg.seed), cache
    )
    if trace.path:  # the run directory's engine plan, once both engines run (a failed start leaves nothing)
        write_json(trace.path.parent / "engines.json", placement)
    return RoleEngine(target, "target", trace, budget), RoleEngine(optimizer, "optimizer", trace, budget)


def optimize(
    cfg: RunConfig,
    out: str | Path | None = None,
    *,
    task: Task | None = None,
    overwrite: bool = False,
    on_estimate=None,
    proposer: Proposer | None = None,
    acceptance: Acceptance | None = None,
) -> RunResult:
    """Run a search; with ``out``, write a run directory there (refused if it holds another run).

    Before any engine starts, the search's size (``run/estimate.py``) is logged, or handed to
    ``on_estimate(estimate)``, and written to the run directory as ``estimate.json``. ``proposer`` /
    ``acceptance``: strategy objects used instead of the ones the config names (``search.proposer``,
    ``selection.acceptance``); the run directory's config says so, and ``resume`` needs the same objects."""
    plan = RunPlan.build(cfg, task, proposer=proposer, acceptance=acceptance)  # bad input fails here
    size = plan.estimate()
    run_dir = RunDir(out) if out else None
    if run_dir:
        header = models_comment(plan.models) + strategies_comment(plan)
        run_dir.open(header + dump_config(plan.cfg), overwrite=overwrite)
        write_json(run_dir.path / "estimate.json", size.to_dict())
    (on_estimate or (lambda e: [log.info(line) for line in e.lines()]))(size)
    try:
        return _run(plan, run_dir, *_open_checkpoint(run_dir))
    except ApoError:
        if run_dir:
            run_dir.discard()  # e.g. the engine did not start: leave no half run behind
        raise
    finally:
        if run_dir:
            run_dir.close()


def resume(out: str | Path, *, proposer: Proposer | None = None, acceptance: Acceptance | None = None) -> RunResult:
    """Continue an interrupted run from its checkpoint; ends with the same results as an uninterrupted run."""
    run_dir = RunDir(out)
    run_dir.open("", resume=True)
    try:
        checkpoint, saved = _open_checkpoint(run_dir)
        if saved and saved.phase is Phase.DONE and run_dir.results.is_file():
            # Nothing left to compute: the answer is in the run directory, no model needs loading.
            log.info("%s is a finished run; results from its results.json", run_dir.path)
            return RunResult(**json.loads(run_dir.results.read_text(encoding="utf-8")))
        cfg = load_config(run_dir.config, resume=True)  # a run of an earlier version: its keys migrated
        return _run(RunPlan.build(cfg, proposer=proposer, acceptance=acceptance), run_dir, checkpoint, saved)
    finally:
        run_dir.close()


def _open_checkpoint(run_dir: RunDir | None) -> tuple[Checkpoint | None, RunState | None]:
    """The run directory's checkpoint and the state it holds (None: a fresh run, or no run directory), read once:
    the same ``Checkpoint`` goes on appending to the predictions log it read."""
    if run_dir is None:
        return None, None
    checkpoint = Checkpoint(run_dir.checkpoint)
    return checkpoint, checkpoint.load()


def _run(plan: RunPlan, run_dir: RunDir | None, checkpoint: Checkpoint | None, saved: RunState | None) -> RunResult:
    started = time.perf_counter()
    cfg, task = plan.cfg, plan.task
    for split in dict.fromkeys(("train", cfg.evaluation.test_split)):
        _log_label_mapping(task, split)
    for warning in plan.warnings:
        log.warning(warning)
    trace = Trace(run_dir.trace if run_dir else None)
    budget = Budget(cfg.budget, trace)  # enforced by the role engines while the rounds run
    loading = time.perf_counter()
    target, optimizer = engines_for(cfg, trace, budget)
    attach_judge(task, optimizer, trace)  # metric judge: graded by judge.model, else the optimizer's engine
    model_load = time.perf_counter() - loading
    # Over-long examples are cut in the middle to fit the target's context (tasks.length.LengthLimit),
    # leaving room for the answer; each cut is logged and counted as an "example_truncated" fault.
    limit_length(task, target, max(16, plan.answer.max_tokens), trace)
    scorer = plan.scorer(target)
    state = _starting_state(plan, saved, trace, scorer)
    tracker = tracking.start(cfg, run_dir.path if run_dir else None)
    recorder = RunRecorder(run_dir, checkpoint, trace, scorer, budget)
    search = BeamSearch(
        task,
        cfg,
        plan.splits,
        plan.proposer,
        plan.acceptance,
        scorer,
        optimizer,
        budget,
        Recorders(recorder, tracking.RoundMetrics(tracker, trace, task.metric.name)),
    )
    budget.start(state.elapsed)
    state = search.run(state)
    budget.stop()
    result = Finish(task, cfg, plan.splits, scorer, trace).result(state, budget.elapsed, recorder.records)
    result.models = plan.models  # which models this run used (also in engines.json and config.yaml's header)
    result.warnings = plan.warnings
    _time_split(result, time.perf_counter() - started + (saved.elapsed if saved else 0.0), model_load, trace)
    if run_dir:  # predictions, then results.json (written once), then the DONE checkpoint: a kill between any two
        # leaves a checkpoint short of DONE, and resume does the final evaluation again (tests/run/test_resume_final_e2e.py)
        _write_final_predictions(run_dir, plan, scorer, result)
        write_json(run_dir.results, result.to_dict())
        recorder.done(state)
    tracking.finish(tracker, result, run_dir.path if run_dir else None)
    record_throughput(cfg, trace.totals_dict())  # the next estimate's time figure on this machine
    return result


def _starting_state(plan: RunPlan, saved: RunState | None, trace: Trace, scorer: Scorer) -> RunState:
    """The checkpoint's state (its ledger and the scorer's predictions restored), or a fresh one; an initial prompt
    over ``search.max_prompt_tokens`` can't start a search under that cap: one line."""
    if saved:
        trace.restore(saved.totals, saved.faults, saved.counts, saved.rejections)
        scorer.import_memo(saved.predictions)
        log.info("resuming at round %d (%s)", saved.round, saved.phase.value)
        state = saved
    else:
        state = RunState.fresh(plan.cfg.search.initial_prompt or plan.task.initial_instruction)
    cap = plan.cfg.search.max_prompt_tokens
    if cap is not None:
        n = prompt_tokens(plan.task, scorer.engine, [state.initial])[0]
        if n > cap:
            raise ApoError(
                f"search.max_prompt_tokens: the initial prompt is {n} target tokens, over the cap of "
                f"{cap} (the template rendered with an empty input); raise the cap or shorten the prompt"
            )
    return state


def _time_split(result: RunResult, total: float, model_load: float, trace: Trace) -> None:
    """Where the wall time went (this process; "search" includes earlier processes of a resumed run)."""
    search = float(result.time.get("seconds", 0.0))
    final_test = trace.phase_seconds.get("final", 0.0)
    result.time.update(
        total=round(total, 1),
        model_load=round(model_load, 1),
        search=round(search, 1),
        final_test=round(final_test, 1),
        other=round(max(0.0, total - model_load - search - final_test), 1),
    )


def _write_final_predictions(run_dir: RunDir, plan: RunPlan, scorer: Scorer, result: RunResult) -> None:
    """predictions/test-initial.jsonl, test-best.jsonl (and test-selected.jsonl when it differs): every
    example of the final test evaluation (from the search's scorer, which remembers them: no engine call)."""
    from apo_local.scoring import prediction_records, search_records, write_predictions

    task, test = plan.task, plan.splits.test
    prompts = {"initial": result.initial_prompt, "best": result.best_prompt, "selected": result.selected_prompt}
    if prompts["selected"] == prompts["best"]:
        del prompts["selected"]
    for name, evaluation in zip(prompts, scorer.evaluate_many(list(prompts.values()), test)):
        write_predictions(
            run_dir.path / "predictions" / f"test-{name}.jsonl", prediction_records(task, test, evaluation)
        )
    if task.kind == "generation":  # every output the search produced, per prompt and example (train and test)
        write_predictions(run_dir.path / "predictions" / "search.jsonl", search_records(task, scorer))


def strategies_comment(plan: RunPlan) -> str:
    """config.yaml's header lines for strategy objects passed to ``optimize`` instead of the config's names."""
    objects = {"search.proposer": plan.proposer, "selection.acceptance": plan.acceptance}
    return "".join(
        f"# {key}: a strategy object ({type(objects[key]).__module__}.{type(objects[key]).__qualname__}) passed to "
        "optimize(), not the name below; resume(..., same object) continues it\n"
        for key in plan.custom
    )


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


def _log_label_mapping(task: Task, split: str) -> None:
    mapped = task.label_mapping(split) if split in task.split_names else {}
    if mapped:
        log.info(
            "%s split: %d labels mapped to the task's spelling (%s)",
            split,
            sum(mapped.values()),
            ", ".join(f"{k}: {v}" for k, v in mapped.items()),
        )
