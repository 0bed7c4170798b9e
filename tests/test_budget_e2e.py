"""Budget caps hold inside a round: every cap is checked at every phase boundary and before every engine
batch, and a run stopped by one reports it as its stop reason. Real engine, tiny run; the clock the budget
reads is advanced by the test at a chosen point (an hour "passes" there)."""

from __future__ import annotations

import json

import pytest

from apo_local.ledger import Budget
from apo_local.run.config import build_config
from apo_local.run.optimize import optimize
from apo_local.run.recorder import RunRecorder
from apo_local.search.optimizer_calls import OptimizerCalls

pytestmark = pytest.mark.engine

CFG = {
    "task": "liar",
    "seed": 0,
    "train_limit": 40,
    "search": {"rounds": 2, "beam_size": 2, "minibatch_size": 4, "max_expansion": 2},
    "protegi": {"n_gradients": 1, "errors_per_gradient": 2, "mc_samples": 1},
    "selection": {"budget": 12, "batch_size": 4, "arms_per_round": 2},
    "optimizer": {"max_tokens": 32},
    "evaluation": {"test_limit": 6},
    "budget": {"max_minutes": 1},
}


@pytest.fixture
def clock(monkeypatch):
    """The search's elapsed seconds, set by the test (0 until it jumps)."""
    now = {"elapsed": 0.0}
    monkeypatch.setattr(Budget, "elapsed", property(lambda self: now["elapsed"]))
    return now


def _run(tmp_path):
    optimize(build_config(CFG, {"cache": str(tmp_path / "cache.sqlite")}), tmp_path / "run")
    run = tmp_path / "run"
    phases = [c["phase"] for c in map(json.loads, (run / "trace.jsonl").read_text().splitlines()) if "role" in c]
    return run, json.loads((run / "results.json").read_text()), phases


def test_max_minutes_fires_at_the_boundary_between_expansion_and_selection(engine, tmp_path, clock, monkeypatch):
    original = RunRecorder.checkpoint

    def slow_expansion(self, state):
        original(self, state)
        if state.phase == "expanded" and state.round == 1:
            clock["elapsed"] = 3600.0  # the expansion took an hour

    monkeypatch.setattr(RunRecorder, "checkpoint", slow_expansion)
    run, results, phases = _run(tmp_path)
    assert results["stop_reason"] == "budget: max_minutes (1.0) reached"
    assert results["rounds_completed"] == 0 and "select" not in phases and phases[-1] == "final"
    assert {"minibatch", "gradient", "paraphrase"} <= set(phases)  # edits: only from gradients that finished
    assert json.loads((run / "rounds" / "round-01.json").read_text())["phase"] == "expanded"
    assert [b["text"] for b in results["beam"]] == [results["initial_prompt"]]  # the beam of the last selection
    assert json.loads((run / "checkpoint.json").read_text())["phase"] == "done"


def test_max_minutes_fires_between_engine_batches_inside_the_expansion(engine, tmp_path, clock, monkeypatch):
    original = OptimizerCalls.ask

    def slow_gradient(self, purpose, prompts, n=1, **kw):
        out = original(self, purpose, prompts, n, **kw)
        if purpose == "gradient":
            clock["elapsed"] = 3600.0
        return out

    monkeypatch.setattr(OptimizerCalls, "ask", slow_gradient)
    run, results, phases = _run(tmp_path)
    assert results["stop_reason"] == "budget: max_minutes (1.0) reached"
    assert "gradient" in phases and "edit" not in phases and "paraphrase" not in phases
    assert results["rounds_completed"] == 0 and not (run / "rounds" / "round-01.json").exists()
    assert results["beam"][0]["text"] == results["initial_prompt"]
