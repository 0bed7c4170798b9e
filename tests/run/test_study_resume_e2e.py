"""Exact resume with the new state paths: ABO revisions, validated acceptance and wrong labels shown to the
optimizer, interrupted in round 2's selection phase and resumed on a fresh result cache."""

from __future__ import annotations

import json

import pytest

from apo_local.run.config import build_config
from apo_local.run.optimize import optimize, resume
from apo_local.search.beam import BeamSearch
from tests.helpers.shipped_runs import ABO_READY

pytestmark = pytest.mark.engine

CFG = {
    "task": "liar",
    "seed": 3,
    "train_limit": 100,
    "search": {
        "proposer": "abo",
        "initial_prompt": ABO_READY,
        "rounds": 2,
        "beam_size": 1,
        "minibatch_size": 6,
        "max_expansion": 2,
    },
    "abo": {"init_samples": 2, "revise_samples": 2, "errors_per_revision": 2, "work_tokens": 16},
    "selection": {"acceptance": "validated", "validation_k": 2, "validation_size": 6},
    "feedback": {"labels": "wrong"},
    "optimizer": {"max_tokens": 48},
    "evaluation": {"test_limit": 8},
}


def test_interrupted_abo_validated_run_resumes_to_the_same_results(engine, tmp_path, monkeypatch):
    ref = optimize(build_config(CFG, {"cache": str(tmp_path / "ref.sqlite")}), tmp_path / "ref")
    assert ref.rounds_completed == 2 and all("accepted" in h for h in ref.history)

    original = BeamSearch._select

    def interrupted(self, state):
        if state.round == 2:
            raise KeyboardInterrupt
        return original(self, state)

    monkeypatch.setattr(BeamSearch, "_select", interrupted)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        optimize(build_config(CFG, {"cache": str(tmp_path / "run.sqlite")}), run)
    assert json.loads((run / "checkpoint.json").read_text())["phase"] == "expanded"
    monkeypatch.setattr(BeamSearch, "_select", original)

    resume(run)

    def comparable(path):
        return {k: v for k, v in json.loads((path / "results.json").read_text()).items() if k != "time"}

    assert comparable(run) == comparable(tmp_path / "ref")
