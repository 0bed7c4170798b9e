"""Behaviour lock of the search logic without an engine: every shipped run config at the tiny size of
``tests/helpers/shipped_runs.py``, three rounds, against the scripted engine (tests/helpers/stand_in.py: hash-based replies in
the shapes the meta-prompts ask for, hash-based label scores). The results and round files must equal
``golden/fake-engine.json`` (at ``LOCK_SIZE``). The lock is what locks search logic (the real engine's runs are
checked for what only the engine can show: tests/config/test_study_configs_e2e.py); it holds on any CPU (no model
numerics), and its runs are real searches: hygiene is off, so candidates are admitted and beams change.
tests/search/test_config_behaviours.py checks, on the same runs, what defines each config.

Goldens are never rewritten by these tests: ``APO_LOCAL_WRITE_GOLDEN=1`` writes ``fake-engine.new.json`` to diff
(tests/helpers/golden_files.py).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import apo_local.run.optimize as O
from apo_local.run.config import build_config
from tests.helpers.golden_files import check_golden
from tests.helpers.shipped_runs import LOCK_SIZE, tiny
from tests.helpers.stand_in import use_stand_in

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "fake-engine.json"


def test_three_rounds_of_every_method_match_the_golden(lock_runs):
    check_golden(GOLDEN, {name: run.comparable for name, run in lock_runs.items()})


def test_no_two_configs_lock_the_same_search(lock_runs):
    """Each config changes something the search does: no two lock runs have the same rounds and history."""
    same = [
        (a, b)
        for a, b in itertools.combinations(sorted(lock_runs), 2)
        if (lock_runs[a].rounds, lock_runs[a].results["history"])
        == (lock_runs[b].rounds, lock_runs[b].results["history"])
    ]
    assert not same


def test_the_lock_runs_search(lock_runs):
    """A lock of runs where nothing happens locks nothing: every config admits new candidates into its beam."""
    idle = [n for n, r in lock_runs.items() if not any(h["accepted"] for h in r.results["history"])]
    assert not idle


def test_with_hygiene_every_admitted_candidate_passes_it(tmp_path, monkeypatch):
    from apo_local.search.hygiene import Hygiene
    from apo_local.tasks import load_task

    use_stand_in(monkeypatch)
    data = tiny("liar-protegi", LOCK_SIZE)
    data["search"]["initial_prompt"] = "Decide whether the statement is a lie using context facts"  # no label words
    result = O.optimize(build_config(data, {"cache": "off"}), tmp_path / "run")
    task = load_task("liar")
    hygiene = Hygiene([ex.input for ex in task.split("train")], task.labels)
    rounds = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "rounds").glob("*.json"))]
    admitted = [
        c
        for r in rounds
        for c in r["candidates"]
        if c["operator"] != "initial" and not c["status"].startswith(("rejected", "kept"))
    ]
    parents = {c["id"]: c["text"] for r in rounds for c in r["candidates"]}
    assert admitted and all(hygiene.reason(c["text"], parents[c["parent"]]) is None for c in admitted)
    r = result.replies
    assert r["proposals"] == r["accepted"] + sum(r["rejected"].values()) and r["replies"] > 0


def test_max_target_calls_fires_between_bandit_rounds(tmp_path, monkeypatch):
    use_stand_in(monkeypatch)
    data = tiny("demo", LOCK_SIZE)
    data["selection"].update(budget=48, batch_size=4, arms_per_round=2)
    data["budget"] = {"max_target_calls": 17}  # 4 minibatch rows + a first bandit round of 12: under; the second: over
    data["search"]["hygiene"] = False  # the stand-in's replies name no labels: keep its candidates (see above)
    result = O.optimize(build_config(data, {"cache": "off"}), tmp_path / "run")
    phases = [
        c["phase"]
        for c in map(json.loads, (tmp_path / "run" / "trace.jsonl").read_text().splitlines())
        if "role" in c and c["role"] == "target"
    ]
    assert result.stop_reason == "budget: max_target_calls (17) reached"
    # final: the beam on the validation rows (held out of train), then on the test rows, then the edit attribution
    assert phases == ["minibatch", "select", "select", "final", "final", "final"] and result.rounds_completed == 0
    assert json.loads((tmp_path / "run" / "rounds" / "round-01.json").read_text())["phase"] == "expanded"


def test_the_estimate_is_printed_before_the_search_and_kept_in_the_run_directory(tmp_path, monkeypatch, capsys):
    from click.testing import CliRunner

    from apo_local.commands.cli import cli

    use_stand_in(monkeypatch)
    res = CliRunner().invoke(cli, ["optimize", "--preset", "smoke", "--cache", "off", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    stderr, stdout = res.stderr, res.stdout
    assert stderr.splitlines()[0].startswith("pre-run estimate (1 rounds") and "optimizer calls<=" in stderr
    assert "pre-run estimate" not in stdout and "rounds=1 stop=completed" in stdout
    saved = json.loads((tmp_path / "run" / "estimate.json").read_text())
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["usage"]["target"]["prompts"] <= saved["target"]["prompts"]


def test_instruction_edits_and_demonstration_moves_in_one_round(tmp_path, monkeypatch):
    """instruction+fewshot with every reply finished: one round holds both kinds of candidate, and a
    demonstration move keeps its parent's instruction (the real-engine test cannot count on a 135M model
    finishing a reply within a tiny max_tokens)."""
    from apo_local.tasks.demos import split_prompt

    use_stand_in(monkeypatch)
    data = tiny("instruction+fewshot", LOCK_SIZE)
    data["search"].update(rounds=2, max_expansion=8)
    data["search"]["hygiene"] = False
    data["protegi"] = {"n_gradients": 2, "errors_per_gradient": 2, "mc_samples": 0}
    data["fewshot"] = {"samples_per_parent": 2, "max_demos": 2, "pool_size": 8}
    O.optimize(build_config(data, {"cache": "off"}), tmp_path / "run")
    rounds = [json.loads((tmp_path / "run" / "rounds" / f"round-0{r}.json").read_text())["candidates"] for r in (1, 2)]
    ops = {c["operator"] for c in rounds[0]}
    assert "edit" in ops and ops & {"demo-add", "demo-swap", "demo-remove"}, ops
    by_id = {c["id"]: c for cands in rounds for c in cands}
    moves = [c for cands in rounds for c in cands if c["operator"].startswith("demo-")]
    assert moves and all(
        split_prompt(c["text"])[0] == split_prompt(by_id[c["parent"]]["text"])[0] for c in moves if c["parent"] in by_id
    )  # a demonstration move keeps the instruction
