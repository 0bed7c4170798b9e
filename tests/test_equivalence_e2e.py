"""Behaviour lock: every shipped run config, at a tiny size and a fixed seed, on the real engine, gives
exactly the stored results (``tests/golden/<config>.json``): texts, metrics, usage, faults, history and
every round file. Wall-time fields (``time``) are left out; they vary from run to run.

A change that alters results ON PURPOSE regenerates the goldens (then review the diff before committing):

    APO_LOCAL_WRITE_GOLDEN=1 python -m pytest tests/test_equivalence_e2e.py

Each config is run once per session (tests/shipped_runs.py, shared with the study checks), with a fresh result
cache, so a run is independent of the others and of test order.
"""

from __future__ import annotations

import shutil
import json
import os
from pathlib import Path

import pytest
import yaml

from apo_local.config import build_config
from tests.shipped_runs import RUN_CONFIGS, tiny

pytestmark = pytest.mark.engine

GOLDEN = Path(__file__).resolve().parent / "golden"
WRITE = os.environ.get("APO_LOCAL_WRITE_GOLDEN") == "1"


def comparable(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text())
    results.pop("time")
    rounds = {p.stem: json.loads(p.read_text()) for p in sorted((run / "rounds").glob("round-*.json"))}
    return {"results": results, "rounds": rounds}


def test_every_run_config_has_a_golden():
    if WRITE:
        pytest.skip("writing goldens")
    assert RUN_CONFIGS and {p.stem for p in GOLDEN.glob("*.json")} - {"fake-engine"} == set(RUN_CONFIGS)


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_same_results_as_golden(name, shipped_run):
    got = comparable(shipped_run(name))
    path = GOLDEN / f"{name}.json"
    if WRITE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        return
    want = json.loads(path.read_text())
    assert got["results"] == want["results"]
    assert got["rounds"] == want["rounds"]


def test_a_version_1_run_resumes_to_the_same_results(engine, tmp_path):
    """``golden/v1-run``: a run directory written by the earlier layout (flat config keys, a version-1
    checkpoint), interrupted in round 2's selection; ``expected-results.json`` is its uninterrupted twin."""
    from apo_local.runner import resume

    run = tmp_path / "run"
    shutil.copytree(GOLDEN / "v1-run", run, ignore=shutil.ignore_patterns("expected-results.json"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["search"]["n_gradients"] and json.loads((run / "checkpoint.json").read_text())["version"] == 1
    # The fixture was recorded with bf16 weights (the CPU's "auto" then); name it so the resume computes
    # exactly as the interrupted process did, whatever "auto" resolves to on this CPU (engine/settings.py).
    config["target"] = dict(config.get("target") or {}, dtype="bfloat16")
    (run / "config.yaml").write_text(yaml.safe_dump(dict(config, cache=str(tmp_path / "cache.sqlite"))))
    resume(run)
    got = json.loads((run / "results.json").read_text())
    got.pop("time")
    # The fixture predates the reply counts; resumed in round 2's selection, the optimizer is asked nothing.
    assert got.pop("replies")["replies"] == 0
    expected = GOLDEN / "v1-run" / "expected-results.json"
    if WRITE:  # the version-1 run directory itself is never regenerated (it records the earlier layout); what its
        # resume must give is, when results change on purpose (review the diff: only the intended keys may move)
        expected.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(expected.read_text())
    assert json.loads((run / "checkpoint.json").read_text())["version"] == 2


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_the_pre_run_estimate_bounds_the_golden_usage(name):
    """No engine: the estimate from the tiny config is an upper bound of what the golden run used."""
    from apo_local.search.estimate import estimate
    from apo_local.search.splits import eval_rows, train_rows, validation_rows
    from apo_local.tasks import load_task

    path = GOLDEN / f"{name}.json"
    if WRITE or not path.is_file():
        pytest.skip("no golden yet")
    cfg = build_config(tiny(name))
    task = load_task(cfg.task)
    est = estimate(cfg, task, train_rows(task, cfg), eval_rows(task, cfg), validation_rows(task, cfg))
    for role, used in json.loads(path.read_text())["results"]["usage"].items():
        bound = getattr(est, role)
        assert used["calls"] <= bound.calls and used["prompts"] <= bound.prompts, (role, used, bound)
        assert used["output_tokens"] <= bound.output_tokens, (role, used, bound)
        assert used["input_tokens"] <= 3 * bound.input_tokens, (role, used, bound)  # a rough figure, not a bound
