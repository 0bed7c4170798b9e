"""A tiny ProTeGi run on the real engine: a complete run directory, resume of a finished run, a budget stop.
(Kill -9 at several points and exact resume: tests/run/test_faults_e2e.py.)"""

from __future__ import annotations

import json

import pytest
import yaml

from apo_local.run.config import build_config
from apo_local.run.optimize import optimize, resume
from tests.conftest import TINY

pytestmark = pytest.mark.engine


def test_run_directory_is_complete(tiny_run):
    run, result = tiny_run
    assert (run / "config.yaml").is_file() and (run / "checkpoint.json").is_file()
    assert json.loads((run / "checkpoint.json").read_text())["phase"] == "done"
    results = json.loads((run / "results.json").read_text())
    assert results["initial_prompt"] == result.initial_prompt
    assert results["rounds_completed"] == 2 and results["stop_reason"] == "completed"
    assert set(results["initial_test"]["metrics"]) >= {"f1", "accuracy"}
    assert results["best_prompt"] in [b["text"] for b in results["beam"]]

    calls = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    engine_calls = [c for c in calls if "role" in c]
    assert {c["role"] for c in engine_calls} == {"target", "optimizer"}
    assert {"gradient", "edit", "paraphrase", "minibatch", "select", "final"} <= {c["phase"] for c in engine_calls}
    assert all(c["input_tokens"] > 0 for c in engine_calls)
    optimizer_tokens = sum(c["input_tokens"] + c["output_tokens"] for c in engine_calls if c["role"] == "optimizer")
    assert (
        optimizer_tokens
        == results["usage"]["optimizer"]["input_tokens"] + results["usage"]["optimizer"]["output_tokens"]
    )

    for r in (1, 2):
        rnd = json.loads((run / "rounds" / f"round-{r:02d}.json").read_text())
        cands = rnd["candidates"]
        assert any(c["status"] == "beam" for c in cands)
        assert all({"text", "parent", "operator", "gradient", "estimate", "pulls"} <= set(c) for c in cands)
        assert sum(c["status"] == "beam" for c in cands) <= 2
    assert yaml.safe_load((run / "config.yaml").read_text())["search"]["rounds"] == 2
    assert oct(run.stat().st_mode & 0o777) == "0o700"


def test_resume_of_a_finished_run_loads_no_model(tiny_run, monkeypatch):
    import importlib

    run, _ = tiny_run

    def no_engine(*args, **kwargs):
        raise AssertionError("a finished run needs no engine")

    monkeypatch.setattr(importlib.import_module("apo_local.run.optimize"), "engines_for", no_engine)
    assert resume(run).to_dict() == json.loads((run / "results.json").read_text())


def test_refuses_to_mix_runs(tiny_run):
    from apo_local.support.errors import ApoError

    run, _ = tiny_run
    with pytest.raises(ApoError, match="already holds a run"):
        optimize(build_config(TINY), run)


def test_budget_cap_stops_gracefully_and_keeps_the_beam(engine, tmp_path):
    cfg = build_config(TINY, {"cache": str(tmp_path / "cache.sqlite"), "budget.max_optimizer_tokens": 1})
    result = optimize(cfg, tmp_path / "run")
    assert result.stop_reason.startswith("budget: max_optimizer_tokens")
    assert result.rounds_completed == 0  # stopped inside round 1 (caps are checked before every engine batch)
    assert result.best_prompt == result.initial_prompt  # the beam of the last completed selection: the initial one
    assert json.loads((tmp_path / "run" / "results.json").read_text())["stop_reason"] == result.stop_reason
