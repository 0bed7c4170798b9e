"""The naive-vs-validated acceptance study measures acceptance only (Melcer et al., 2025): both rules choose
from one pool, the round's updates, made by the same operator; and a study reports the method's own final
prompt (``selection.final_pick: method``), not the guarded pick in which the initial prompt competes at the end.
Pure logic and scripted engines (tests/search/test_study_ablations.py's), no model."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import apo_local.run.optimize as O
from apo_local.run.config import build_config
from apo_local.search.acceptance import NaiveAcceptance, ValidatedAcceptance
from apo_local.search.acceptance.pool import updates
from apo_local.search.state import Candidate, Status
from tests.helpers.stand_in import serve_roles
from tests.search.test_study_ablations import FLIP, TASK, TRUTH, Optimizer, Target


def _cand(cid: str, operator: str, parent: str | None, status: Status = Status.NEW) -> Candidate:
    return Candidate(f"text of {cid}", 1, operator, parent=parent, id=cid, status=status)


ROUND = [
    _cand("P", "initial", None, Status.KEPT),
    _cand("E1", "edit", "P"),
    _cand("E2", "edit", "P"),
    _cand("E1p", "paraphrase", "E1"),
    _cand("Pp", "paraphrase", "P"),
    _cand("E3", "edit", "P"),
]


class Ctx:
    """What the two rules read of a round: its streams, the scorer (recording which prompts it scores)."""

    def __init__(self, beam_size: int):
        self.round, self.beam_size, self.scored = 1, beam_size, set()
        self.streams = SimpleNamespace(rng=lambda *purpose: random.Random(str(purpose)))
        self.validation = [SimpleNamespace(id=f"v{i}") for i in range(3)]
        self.budget, self.trace = SimpleNamespace(check=lambda: None), SimpleNamespace(at=lambda *a: None)
        self.scorer = SimpleNamespace(rewards=self._rewards)

    def _rewards(self, pairs):
        self.scored |= {text for text, _ in pairs}
        return [0.0 for _ in pairs]


def test_naive_and_validated_choose_from_the_same_pool_of_updates():
    pool = {c.text for c in updates(ROUND)}
    assert pool == {"text of E1", "text of E2", "text of E3"}  # never a paraphrase, of the parent or of an edit
    naive_beam, _ = NaiveAcceptance().accept([Candidate(**vars(c)) for c in ROUND], Ctx(beam_size=len(pool)))
    ctx = Ctx(beam_size=1)
    ValidatedAcceptance(validation_k=10, validation_size=3).accept([Candidate(**vars(c)) for c in ROUND], ctx)
    assert {c.text for c in naive_beam} == pool  # everything naive may accept
    assert ctx.scored - {"text of P"} == pool  # everything validated may accept (the parent is its bar)


def _run(tmp_path, monkeypatch, target, data: dict, name: str):
    optimizer = Optimizer()
    serve_roles(monkeypatch, target, optimizer)
    base = {
        "task": "liar",
        "train_limit": 40,
        "cache": "off",
        "search": {"rounds": 1, "beam_size": 1, "minibatch_size": 8, "max_expansion": 4, "hygiene": "form"},
        "protegi": {"n_gradients": 3, "errors_per_gradient": 4, "mc_samples": 0},
        "selection": {"budget": 16, "batch_size": 4, "arms_per_round": 2},
        "evaluation": {"test_limit": 4, "attribution": False},
    }
    for key, value in data.items():
        base[key] = {**base.get(key, {}), **value}
    run = tmp_path / name
    O.optimize(build_config(base), run)
    return (
        json.loads((run / "rounds" / "round-01.json").read_text())["candidates"],
        json.loads((run / "results.json").read_text()),
    )


def test_a_naive_and_a_validated_run_see_the_same_proposals(tmp_path, monkeypatch):
    """Same seed, same operator: round 1 proposes the same updates to both rules; naive accepts one of them,
    validated scores every one of them against the parent."""
    naive, _ = _run(tmp_path, monkeypatch, Target(oracle=False), {"selection": {"acceptance": "naive"}}, "naive")
    validated, _ = _run(
        tmp_path,
        monkeypatch,
        Target(oracle=False),
        {"selection": {"acceptance": "validated", "validation_k": 8, "validation_size": 8}},
        "validated",
    )
    proposed = lambda cands: [(c["text"], c["operator"]) for c in cands if c["round"] == 1]  # noqa: E731
    assert proposed(naive) == proposed(validated) and len(proposed(naive)) >= 2
    updates_made = {c["text"] for c in validated if c["round"] == 1 and c["status"] != "rejected"}
    assert {c["text"] for c in validated if c.get("pulls") and c["round"] == 1} == updates_made
    assert {c["text"] for c in naive if c["status"] == "beam"} <= updates_made


class InitialOnly(Target):
    """With the task's initial instruction always "Yes" (right on the Yes rows: errors to learn from); with any
    other prompt wrong on every row (an update only makes it worse)."""

    def answer(self, prompt: str) -> str:
        row = prompt.rsplit("Text: ", 1)[1].rsplit("\nLabel:", 1)[0].strip()
        return "Yes" if TASK.initial_instruction in prompt else FLIP[TRUTH[row]]


def test_final_pick_method_reports_the_naive_update_where_the_guarded_pick_returns_the_initial_prompt(
    tmp_path, monkeypatch
):
    naive = {"selection": {"acceptance": "naive", "final_pick": "method"}}
    cands, method = _run(tmp_path, monkeypatch, InitialOnly(), naive, "method")
    accepted = [c["text"] for c in cands if c["status"] == "beam"]
    assert method["selected_prompt"] == accepted[0] != method["initial_prompt"]  # the method's own final prompt
    assert method["selected_by"] == "the method's own final prompt (the final beam's first)"
    assert method["pick"]["rule"] == "method" and method["pick"]["guarded"] == method["initial_prompt"]
    assert "the initial prompt scored best" in method["pick"]["guarded_by"]  # shown beside it
    assert method["initial_validation"]["reward"] > 0 == method["beam"][0]["validation"]["reward"]  # both recorded
    acc = lambda split: method[split]["metrics"]["accuracy"]  # noqa: E731
    assert acc("selected_test") == 0 < acc("initial_test")  # the update made it worse: visible
    _, guarded = _run(tmp_path, monkeypatch, InitialOnly(), {"selection": {"acceptance": "naive"}}, "guarded")
    assert guarded["selected_prompt"] == guarded["initial_prompt"]  # the default pick masks it
