"""Behaviour lock: every shipped run config, at a tiny size and a fixed seed, on the real engine, gives
exactly the stored results (``tests/golden/<config>.json``): texts, metrics, usage, faults, history and
every round file. Wall-time fields (``time``) are left out; they vary from run to run.

A change that alters results ON PURPOSE regenerates the goldens (then review the diff before committing):

    APO_LOCAL_WRITE_GOLDEN=1 python -m pytest tests/test_equivalence_e2e.py

Each config gets a fresh result cache, so a run is independent of the others and of test order.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from apo_local.config import build_config
from apo_local.optimize import optimize

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
RUN_CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith(("compare-", "sweep-")))
WRITE = os.environ.get("APO_LOCAL_WRITE_GOLDEN") == "1"

ABO_READY = ("Follow these steps:\n1. Read the statement and its context.\n2. Look for exaggerations or claims that "
             "contradict known facts.\n3. Answer Yes if it is a lie, otherwise No.\n\nDemonstration:\nStep 1: The statement "
             "is about taxes.\nStep 2: It exaggerates.\nStep 3: Yes")


def tiny(name: str) -> dict:
    """The shipped config at a tiny size, everything that defines the method kept: one round (the demo two)."""
    d = copy.deepcopy(yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()))
    s, sel = d.setdefault("search", {}), d.setdefault("selection", {})
    s.update(rounds=2 if name == "demo" else 1, beam_size=min(s.get("beam_size", 4), 2), minibatch_size=4,
             max_expansion=2)
    for section, caps in _METHOD_KNOBS.items():
        node = d.setdefault(section, {}) if section else s
        for key, cap in caps.items():
            node[key] = min(node.get(key, cap), cap)
    sel.update(budget=12, batch_size=4, arms_per_round=2, validation_k=2, validation_size=4)
    d.setdefault("optimizer", {})["max_tokens"] = 32
    d.setdefault("evaluation", {}).update(test_limit=6, per_round_test=name == "demo")
    d["train_limit"] = 40
    if name == "abo":
        s["initial_prompt"] = ABO_READY  # the revise path (abo-no-demo takes the init path)
    return d


# method knobs and their tiny caps (the section they live in; "" = search)
_METHOD_KNOBS = {"": {"n_gradients": 1, "errors_per_gradient": 2, "mc_samples": 1, "abo_work_tokens": 16}}


def comparable(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text())
    results.pop("time")
    rounds = {p.stem: json.loads(p.read_text()) for p in sorted((run / "rounds").glob("round-*.json"))}
    return {"results": results, "rounds": rounds}


def test_every_run_config_has_a_golden():
    if WRITE:
        pytest.skip("writing goldens")
    assert RUN_CONFIGS and {p.stem for p in GOLDEN.glob("*.json")} == set(RUN_CONFIGS)


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_same_results_as_golden(name, engine, tmp_path):
    cfg = build_config(tiny(name), {"cache": str(tmp_path / "cache.sqlite")})
    optimize(cfg, tmp_path / "run")
    got = comparable(tmp_path / "run")
    path = GOLDEN / f"{name}.json"
    if WRITE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        return
    want = json.loads(path.read_text())
    assert got["results"] == want["results"]
    assert got["rounds"] == want["rounds"]
