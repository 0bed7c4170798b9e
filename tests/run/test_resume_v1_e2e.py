"""A run directory written by the earlier layout resumes (flat config keys, a version-1 checkpoint), on the real
engine. ``golden/v1-run`` was interrupted in round 2's selection by an earlier apo-local; what that process computed
(round 1, round 2's candidates, the usage so far) must carry over exactly, and the resume must finish the run in the
current layout. That a resumed run equals an uninterrupted one is checked in the current layout, both computed in
the same session (tests/run/test_faults_e2e.py, tests/run/test_resume_final_e2e.py): the version-1 run's uninterrupted twin
would need the earlier apo-local."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.engine

V1_RUN = Path(__file__).resolve().parents[1] / "golden" / "v1-run"


def test_a_version_1_run_resumes_and_keeps_what_it_had_computed(engine, tmp_path):
    from apo_local.run.optimize import resume

    run = tmp_path / "run"
    shutil.copytree(V1_RUN, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    before = json.loads((run / "checkpoint.json").read_text())
    assert config["search"]["n_gradients"] and before["version"] == 1  # the earlier layout, as stored
    (run / "config.yaml").write_text(yaml.safe_dump(dict(config, cache=str(tmp_path / "cache.sqlite"))))
    round2 = json.loads((run / "rounds" / "round-02.json").read_text())

    result = resume(run).to_dict()

    after = json.loads((run / "checkpoint.json").read_text())
    assert after["version"] == 2 and after["phase"] == "done"
    assert result["rounds_completed"] == 2 and result["stop_reason"] == "completed"
    # round 1 as the earlier process chose it; round 2 selected among the candidates it had proposed
    assert result["history"][0] == before["state"]["history"][0]
    proposed = {c["id"] for c in round2["candidates"]}
    assert {b["id"] for b in result["beam"]} <= proposed
    # its usage so far carried over: the resume only adds to it (round 2's selection is target work)
    for role, totals in before["totals"].items():
        for key in ("calls", "prompts", "input_tokens", "output_tokens"):
            assert result["usage"][role][key] >= totals[key], (role, key)
    assert result["usage"]["optimizer"] == {
        k: v for k, v in before["totals"]["optimizer"].items() if k in result["usage"]["optimizer"]
    }  # nothing asked of the optimizer
    assert result["replies"]["replies"] == 0
    assert (run / "predictions" / "test-initial.jsonl").is_file() and (run / "results.json").is_file()
