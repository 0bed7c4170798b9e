"""A tiny ProTeGi run on the real engine: complete run directory; kill -9 part-way; exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from apo_local.config import build_config
from apo_local.runner import optimize, resume
from tests.conftest import TINY

pytestmark = pytest.mark.engine


def _comparable(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "time"}


@pytest.fixture(scope="module")
def uninterrupted(engine, tmp_path_factory):
    """The reference run, in-process on the shared engine, with a fresh result cache."""
    root = tmp_path_factory.mktemp("ref")
    cfg = build_config(TINY, {"cache": str(root / "cache.sqlite")})
    result = optimize(cfg, root / "run")
    return root / "run", result


def test_run_directory_is_complete(uninterrupted):
    run, result = uninterrupted
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
    assert optimizer_tokens == results["usage"]["optimizer"]["input_tokens"] + results["usage"]["optimizer"]["output_tokens"]

    for r in (1, 2):
        rnd = json.loads((run / "rounds" / f"round-{r:02d}.json").read_text())
        cands = rnd["candidates"]
        assert any(c["status"] == "beam" for c in cands)
        assert all({"text", "parent", "operator", "gradient", "estimate", "pulls"} <= set(c) for c in cands)
        assert sum(c["status"] == "beam" for c in cands) <= 2
    assert yaml.safe_load((run / "config.yaml").read_text())["search"]["rounds"] == 2
    assert oct(run.stat().st_mode & 0o777) == "0o700"


def test_kill_and_resume_reaches_the_same_results(uninterrupted, engine, tmp_path):
    ref_run, _ = uninterrupted
    run = tmp_path / "run"
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({**TINY, "cache": str(tmp_path / "cache.sqlite")}))
    proc = subprocess.Popen([sys.executable, "-m", "apo_local.cli", "optimize", "--config", str(cfg_file),
                             "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    # Kill -9 in the middle of round 1's selection phase (after the expansion checkpoint).
    deadline = time.time() + 600
    killed = False
    while time.time() < deadline and proc.poll() is None:
        ckpt = run / "checkpoint.json"
        if ckpt.is_file() and json.loads(ckpt.read_text())["phase"] == "expanded":
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.2)
    proc.wait(timeout=60)
    assert killed, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    assert not (run / "results.json").exists()

    result = resume(run)  # in this process, on the shared engine
    assert _comparable(json.loads((run / "results.json").read_text())) == _comparable(
        json.loads((ref_run / "results.json").read_text()))
    assert result.best_prompt == json.loads((ref_run / "results.json").read_text())["best_prompt"]


def test_resume_of_a_finished_run_loads_no_model(uninterrupted, monkeypatch):
    import importlib

    run, _ = uninterrupted

    def no_engine(*args, **kwargs):
        raise AssertionError("a finished run needs no engine")

    monkeypatch.setattr(importlib.import_module("apo_local.runner"), "engines_for", no_engine)
    assert resume(run).to_dict() == json.loads((run / "results.json").read_text())


def test_refuses_to_mix_runs(uninterrupted):
    from apo_local.errors import ApoError

    run, _ = uninterrupted
    with pytest.raises(ApoError, match="already holds a run"):
        optimize(build_config(TINY), run)


def test_budget_cap_stops_gracefully_and_keeps_the_beam(engine, tmp_path):
    cfg = build_config(TINY, {"cache": str(tmp_path / "cache.sqlite"), "budget.max_optimizer_tokens": 1})
    result = optimize(cfg, tmp_path / "run")
    assert result.stop_reason.startswith("budget: max_optimizer_tokens")
    assert result.rounds_completed == 0  # stopped inside round 1 (caps are checked before every engine batch)
    assert result.best_prompt == result.initial_prompt  # the beam of the last completed selection: the initial one
    assert json.loads((tmp_path / "run" / "results.json").read_text())["stop_reason"] == result.stop_reason
