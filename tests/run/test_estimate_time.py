"""The pre-run estimate's time figure: unknown on a machine with no finished run of the models, then
the recorded seconds per target prompt and per optimizer output token times the estimated sizes."""

from __future__ import annotations

import json

from apo_local.run import estimate as est_mod
from apo_local.run.config import build_config
from apo_local.search.splits import eval_rows, train_rows
from apo_local.tasks import load_task

SMALL = {"search": {"rounds": 1, "beam_size": 2, "minibatch_size": 8}, "evaluation": {"test_limit": 8}}


def _estimate(cfg):
    task = load_task(cfg.task)
    return est_mod.estimate(cfg, task, train_rows(task, cfg), eval_rows(task, cfg))


def test_time_is_unknown_until_a_run_was_measured_then_derived_from_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("APO_LOCAL_CACHE_DIR", str(tmp_path))
    cfg = build_config(SMALL)
    first = _estimate(cfg)
    assert first.seconds is None and any("time: unknown" in line for line in first.lines())

    totals = {
        "target": {"prompts": 100, "cache_hits": 50, "seconds": 10.0, "output_tokens": 0},
        "optimizer": {"prompts": 10, "cache_hits": 0, "seconds": 20.0, "output_tokens": 1000},
    }
    est_mod.record_throughput(cfg, totals)
    rates = next(iter(json.loads((tmp_path / "throughput.json").read_text()).values()))
    assert rates == {"target": 10.0 / 50, "optimizer": 20.0 / 1000}  # cached prompts cost nothing

    second = _estimate(cfg)
    want = second.target.prompts * 0.2 + second.optimizer.output_tokens * 0.02
    assert second.seconds == round(want, 1) and any("min on this machine" in line for line in second.lines())
    other = build_config({**SMALL, "optimizer": {"model": "/elsewhere/a-bigger-model"}})
    assert _estimate(other).seconds is None  # another optimizer model: its speed is not known here


def test_a_run_answered_from_the_cache_records_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("APO_LOCAL_CACHE_DIR", str(tmp_path))
    cached = {
        "target": {"prompts": 10, "cache_hits": 10, "seconds": 0.1, "output_tokens": 0},
        "optimizer": {"prompts": 2, "cache_hits": 2, "seconds": 0.0, "output_tokens": 50},
    }
    est_mod.record_throughput(build_config(SMALL), cached)
    assert not (tmp_path / "throughput.json").exists()


def test_a_judged_task_counts_the_judge_under_the_optimizer():
    """metric judge: one grading prompt per target output (+ the prior), and the judge's reasons for every error
    shown to the gradient step; the same config on the plain task has none of them."""
    from pathlib import Path

    import yaml

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "judge.yaml").read_text())
    judged = _estimate(build_config(data))
    plain = _estimate(build_config({**data, "task": "liar"}))
    assert judged.target.prompts == plain.target.prompts
    p, rounds, beam = data["protegi"], data["search"]["rounds"], data["search"]["beam_size"]
    groups = (1 + (rounds - 1) * beam) * p["n_gradients"]
    assert (
        judged.optimizer.prompts - plain.optimizer.prompts
        == judged.target.prompts + 1 + groups * p["errors_per_gradient"]
    )
    assert judged.optimizer.calls - plain.optimizer.calls == judged.target.calls + 1 + groups
