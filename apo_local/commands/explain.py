"""``apo-local explain RUN_DIR``: the edit attribution of a finished run, without re-running its search.

Loads the run's config, task and target engine (the run's settings and result cache, so what the run scored
comes from the cache and the model loads only for prompts it never scored), computes the attribution of the
selected prompt (``run/attribution.py``: lineage gains, unit contributions, paired bootstrap intervals),
prints it (stdout; logs go to stderr) and writes it into the run's ``results.json`` (``attribution``) and
``attribution.json``. Works on a run made before attribution existed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from apo_local.support.errors import ApoError

log = logging.getLogger("apo_local")


def _engines(cfg, task, trace):
    """The run's target engine (lazy: a fully cached job loads no model) and, for a judged task, its judge."""
    from apo_local.engine import RoleEngine, load_engine
    from apo_local.scoring import limit_length
    from apo_local.search.proposers import target_answer
    from apo_local.tasks.judge import attach_judge, judge_of

    cache = False if cfg.cache == "off" else cfg.cache
    target = load_engine(cfg.target.settings(cfg.seed), cache, role="target", lazy=True)
    if judge_of(task) is not None:
        optimizer = load_engine(cfg.optimizer_engine_config().settings(cfg.seed), cache, role="optimizer", lazy=True)
        attach_judge(task, RoleEngine(optimizer, "optimizer", trace), trace)
    limit_length(task, target, max(16, target_answer(cfg).max_tokens), trace)  # the prompts the run sent, cut alike
    return RoleEngine(target, "target", trace)


def explain(path: str | Path) -> dict:
    """Compute, write and return the attribution of the finished run in ``path``."""
    from apo_local.engine import Trace
    from apo_local.run import attribution as attr
    from apo_local.run.config import load_config
    from apo_local.run.plan import cap_test_limit
    from apo_local.run.run_dir import RunDir, write_json
    from apo_local.scoring import Scorer
    from apo_local.search.proposers import target_answer
    from apo_local.search.splits import eval_rows, validation_rows
    from apo_local.tasks import load_task

    run_dir = RunDir(path)
    if not run_dir.results.is_file():
        raise ApoError(
            f"{run_dir.path} is not a finished run (no results.json); finish it with "
            f"apo-local optimize --resume {run_dir.path}"
        )
    run_dir.open("", resume=True)  # the lock: no run may write here meanwhile
    try:
        results = json.loads(run_dir.results.read_text(encoding="utf-8"))
        cfg = load_config(run_dir.config, resume=True)  # a run of an earlier version: its keys migrated
        task = load_task(cfg.task)
        cfg = cap_test_limit(cfg, task)
        trace = Trace()
        trace.at("attribution", results.get("rounds_completed"))
        answer = target_answer(cfg)
        scorer = Scorer(
            task,
            _engines(cfg, task, trace),
            answer.mode,
            answer.max_tokens,
            answer=answer.reading,
            calibration=cfg.scoring.calibration,
        )
        records = attr.candidate_records(
            json.loads(f.read_text(encoding="utf-8")) for f in sorted(run_dir.rounds.glob("round-*.json"))
        )
        result = attr.compute(
            scorer,
            task,
            records,
            results["selected_prompt"],
            results["initial_prompt"],
            validation_rows(task, cfg),
            eval_rows(task, cfg),
        )
        usage = trace.totals_dict().get("target", {})
        log.info(
            "explain: %d target prompts, %d answered by the result cache",
            usage.get("prompts", 0),
            usage.get("cache_hits", 0),
        )
        results["attribution"] = result
        write_json(run_dir.results, results)
        write_json(run_dir.path / "attribution.json", result)
        return result
    finally:
        run_dir.close()


@click.command("explain")
@click.argument("run_dir", type=click.Path(file_okay=False))
def explain_command(run_dir):
    """Which part of a finished run's selected prompt helped: lineage gains and sentence contributions."""
    from apo_local.run.attribution import explain_lines

    result = explain(run_dir)
    for line in explain_lines(result):
        click.echo(line)
    click.echo(f"written: {Path(run_dir) / 'results.json'} (attribution), {Path(run_dir) / 'attribution.json'}")
