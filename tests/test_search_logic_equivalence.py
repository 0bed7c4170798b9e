"""Behaviour lock of the search logic without an engine: every shipped run config at the tiny size of
``tests/shipped_runs.py``, three rounds, against a deterministic stand-in engine (hash-based replies in
the shapes the meta-prompts ask for, hash-based label scores). The results and round files must equal
``golden/fake-engine.json`` (at ``LOCK_SIZE``), which was written by the search code before its redesign into protocols.

It complements the real-engine goldens (which run one round) with three rounds of every method on every
CI run, no engine lock needed. Regenerate on purpose with ``APO_LOCAL_WRITE_GOLDEN=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import apo_local.runner as O
from apo_local.config import build_config
from apo_local.engine import RoleEngine
from apo_local.engine.protocol import ChoiceScores, Generation
from tests.shipped_runs import LOCK_SIZE, RUN_CONFIGS, tiny

GOLDEN = Path(__file__).resolve().parent / "golden" / "fake-engine.json"
WORDS = ["Decide", "carefully", "whether", "the", "statement", "is", "a", "lie", "using", "context", "facts"]


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


class StandIn:
    """Deterministic replies: tagged, untagged (fallback), doubly tagged; ABO steps, narrated work, judgements."""

    model_id, max_model_len, hits = "stand-in", 2048, 0

    def count_tokens(self, prompts):
        return [len(p) // 4 + 1 for p in prompts]

    def _reply(self, prompt: str, seed, k: int) -> str:
        x = _h(prompt, seed, k)
        body = " ".join(WORDS[(x >> i) % len(WORDS)] for i in range(3 + x % 7))
        if "judge whether" in prompt:  # ABO's step-by-step judgement
            return "Step 1: yes\nStep 2: " + ("no" if x % 2 else "yes")
        if "Follow the steps above" in prompt:
            return "Step 1: read it\nStep 2: " + ("skip" if x % 3 == 0 else "compare") + "\nYes"
        if "steps" in prompt.lower() and x % 4:
            body = f"Follow these steps:\n1. {body}\n2. check {x % 13}\n\nDemonstration:\nStep 1: {body}"
        if x % 5 == 0:
            return body
        if x % 7 == 0:
            return f"<START>{body}<END>\n<START>{body} more<END>"
        return f"<START>{body}<END>"

    def generate(self, requests):
        return [Generation(texts, len(r.prompt) // 4, sum(len(t) // 4 for t in texts))
                for r in requests for texts in [tuple(self._reply(r.prompt, r.seed, k) for k in range(r.n))]]

    def score_choices(self, prompts, choices):
        return [ChoiceScores(tuple(-((_h(p, c) % 1000) / 100) for c in choices), len(p) // 4) for p in prompts]


def test_three_rounds_of_every_method_match_the_golden(tmp_path, monkeypatch):
    engine = StandIn()
    monkeypatch.setattr(O, "engines_for", lambda cfg, trace: (RoleEngine(engine, "target", trace),
                                                              RoleEngine(engine, "optimizer", trace)))
    got = {}
    for name in RUN_CONFIGS:
        data = tiny(name, LOCK_SIZE)
        data["search"]["rounds"] = 1 if name == "baseline-no-iteration" else 3
        # Candidate hygiene off: the stand-in's hash-made replies never name the labels (Yes / No), so it would
        # reject nearly every proposal and three rounds would lock no search logic. Hygiene has its own tests
        # (test_reply_checks.py, and below); the stand-in ignores reply shapes and reports no truncation.
        data["search"]["hygiene"] = False
        run = tmp_path / name
        O.optimize(build_config(data, {"cache": "off"}), run)
        results = json.loads((run / "results.json").read_text())
        results.pop("time")
        results.pop("replies")  # the reply counts came later than the golden
        results.pop("models", None), results.pop("warnings", None)  # so did the model record and the warnings
        got[name] = {"results": results,
                     "rounds": {p.stem: json.loads(p.read_text()) for p in sorted((run / "rounds").glob("*.json"))}}
    if os.environ.get("APO_LOCAL_WRITE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True))
        return
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name


def test_with_hygiene_every_admitted_candidate_passes_it(tmp_path, monkeypatch):
    from apo_local.search.hygiene import Hygiene
    from apo_local.tasks import load_task

    engine = StandIn()
    monkeypatch.setattr(O, "engines_for", lambda cfg, trace: (RoleEngine(engine, "target", trace),
                                                              RoleEngine(engine, "optimizer", trace)))
    data = tiny("liar-protegi", LOCK_SIZE)
    data["search"]["initial_prompt"] = "Decide whether the statement is a lie using context facts"  # no label words
    result = O.optimize(build_config(data, {"cache": "off"}), tmp_path / "run")
    task = load_task("liar")
    hygiene = Hygiene([ex.input for ex in task.split("train")], task.labels)
    rounds = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "rounds").glob("*.json"))]
    admitted = [c for r in rounds for c in r["candidates"] if c["operator"] != "initial"
                and not c["status"].startswith(("rejected", "kept"))]
    parents = {c["id"]: c["text"] for r in rounds for c in r["candidates"]}
    assert admitted and all(hygiene.reason(c["text"], parents[c["parent"]]) is None for c in admitted)
    r = result.replies
    assert r["proposals"] == r["accepted"] + sum(r["rejected"].values()) and r["replies"] > 0


def test_max_target_calls_fires_between_bandit_rounds(tmp_path, monkeypatch):
    engine = StandIn()
    monkeypatch.setattr(O, "engines_for", lambda cfg, trace: (RoleEngine(engine, "target", trace),
                                                              RoleEngine(engine, "optimizer", trace)))
    data = tiny("demo", LOCK_SIZE)
    data["selection"].update(budget=48, batch_size=4, arms_per_round=2)
    data["budget"] = {"max_target_calls": 17}  # 4 minibatch rows + a first bandit round of 12: under; the second: over
    data["search"]["hygiene"] = False  # the stand-in's replies name no labels: keep its candidates (see above)
    result = O.optimize(build_config(data, {"cache": "off"}), tmp_path / "run")
    phases = [c["phase"] for c in map(json.loads, (tmp_path / "run" / "trace.jsonl").read_text().splitlines())
              if "role" in c and c["role"] == "target"]
    assert result.stop_reason == "budget: max_target_calls (17) reached"
    # final: the beam on the validation rows (held out of train), then on the test rows, then the edit attribution
    assert phases == ["minibatch", "select", "select", "final", "final", "final"] and result.rounds_completed == 0
    assert json.loads((tmp_path / "run" / "rounds" / "round-01.json").read_text())["phase"] == "expanded"


def test_the_estimate_is_printed_before_the_search_and_kept_in_the_run_directory(tmp_path, monkeypatch, capsys):
    from click.testing import CliRunner

    from apo_local.cli import cli

    engine = StandIn()
    monkeypatch.setattr(O, "engines_for", lambda cfg, trace: (RoleEngine(engine, "target", trace),
                                                              RoleEngine(engine, "optimizer", trace)))
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

    engine = StandIn()
    monkeypatch.setattr(O, "engines_for", lambda cfg, trace: (RoleEngine(engine, "target", trace),
                                                              RoleEngine(engine, "optimizer", trace)))
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
    assert moves and all(split_prompt(c["text"])[0] == split_prompt(by_id[c["parent"]]["text"])[0]
                         for c in moves if c["parent"] in by_id)  # a demonstration move keeps the instruction
