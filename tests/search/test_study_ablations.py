"""The study ablations do what they say, end to end through the real search code with a stand-in engine
(no model): what reaches the optimizer (its prompts, recorded) and what the selection rewards against.

A no-op ablation (labels not corrupted, predictions not flipped, evaluation still shown, ABO steps never
executed or never judged) fails these tests. The target stand-in knows Liar's true labels, so a reward
computed against the true labels is 1.0 and one against corrupted labels 0.0.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

import apo_local.run.optimize as O
from apo_local.engine.protocol import ChoiceScores, Generation
from apo_local.run.config import build_config
from apo_local.search.proposers.abo_format import WORK
from apo_local.tasks import load_task
from tests.helpers.scripted import ScriptedEngine
from tests.helpers.stand_in import serve_roles

TASK = load_task("liar")
TRUTH = {ex.input.strip(): ex.label for split in ("train", "test") for ex in TASK.split(split)}
FLIP = {"Yes": "No", "No": "Yes"}
ROW = re.compile(r'Text: "(.*?)"\n(?:Label: (\S+)\n)?(?:Prediction|Output): (\S+)', re.S)


def _input(prompt: str) -> str:
    return prompt.rsplit("Text: ", 1)[1].rsplit("\nLabel:", 1)[0].strip()


class Target(ScriptedEngine):
    """The shared scripted engine as a target that answers every Liar row with its true label (``oracle``) or
    always "Yes"; in generate mode it writes two steps of work first, then its answer line. ``batches``: the rows of
    each scoring batch."""

    model_id, max_model_len = "stand-in", 4096

    def __init__(self, oracle: bool = True):
        super().__init__(reply=self._work, scores=self._label)
        self.oracle, self.batches = oracle, []

    def answer(self, prompt: str) -> str:
        return TRUTH[_input(prompt)] if self.oracle else "Yes"

    def score_choices(self, prompts, choices):
        self.batches.append({_input(p) for p in prompts})
        return super().score_choices(prompts, choices)

    def _label(self, p: str, choices) -> ChoiceScores:
        return ChoiceScores(tuple(0.0 if c == self.answer(p) else -5.0 for c in choices), len(p) // 4)

    def _work(self, r) -> Generation:
        return Generation(
            (f"Step 1: I read the statement.\nStep 2: I compare it.\nAnswer: {self.answer(r.prompt)}",), 10, 10
        )


class Optimizer(ScriptedEngine):
    """The shared scripted engine as an optimizer: replies in the shape each meta-prompt asks for (``prompts``:
    every prompt it was asked)."""

    model_id, max_model_len = "stand-in", 4096

    def __init__(self):
        super().__init__(reply=lambda r: Generation(tuple(self._reply(r.prompt, k) for k in range(r.n)), 10, 10))

    def _reply(self, prompt: str, k: int) -> str:
        tag = hashlib.sha256(f"{prompt}|{k}".encode()).hexdigest()[:6]
        if "judge whether" in prompt:
            return "Step 1: yes\nStep 2: no\nStep 3: no"
        if "Rewrite only step" in prompt:
            return f"<START>Weigh the claim against known facts ({tag}).<END>"
        return f"<START>Decide if the statement is a lie ({tag}).<END>"


def _run(tmp_path, monkeypatch, data: dict, oracle: bool = True):
    target, optimizer = Target(oracle), Optimizer()
    serve_roles(monkeypatch, target, optimizer)
    base = {
        "task": "liar",
        "train_limit": 40,
        "cache": "off",
        "search": {"rounds": 1, "beam_size": 1, "minibatch_size": 8, "max_expansion": 4},
        "protegi": {"n_gradients": 2, "errors_per_gradient": 4, "mc_samples": 1},
        "selection": {"budget": 16, "batch_size": 4, "arms_per_round": 2},
        "evaluation": {"test_limit": 4},
    }
    for key, value in data.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    base = {k: v for k, v in base.items() if v is not None}
    run = tmp_path / "run"
    O.optimize(build_config(base), run)
    rnd = json.loads((run / "rounds" / "round-01.json").read_text())
    phases = [
        (c["role"], c["phase"]) for c in map(json.loads, (run / "trace.jsonl").read_text().splitlines()) if "role" in c
    ]
    return target, optimizer, rnd, phases


def _rows(prompts):
    """(input, label shown or None, prediction shown) of every example row shown to the optimizer."""
    return [(text.strip(), label or None, pred) for p in prompts for text, label, pred in ROW.findall(p)]


def test_wrong_labels_reach_the_optimizer_and_the_bandit_rewards_use_the_true_ones(tmp_path, monkeypatch):
    # plain correctness as the reward, so "every row right" reads as an estimate of exactly 1.0
    _, optimizer, rnd, _ = _run(
        tmp_path, monkeypatch, {"feedback": {"labels": "wrong"}, "selection": {"reward": "accuracy"}}
    )
    rows = _rows(optimizer.prompts)
    assert len(rows) >= 4
    for text, label, pred in rows:  # the target is right on every row: against the corrupted labels, all "errors"
        assert label == FLIP[TRUTH[text]] and pred == TRUTH[text]
    scored = [c["estimate"] for c in rnd["candidates"] if c.get("estimate") is not None]
    assert scored and all(e == 1.0 for e in scored)  # rewards against the true labels (corrupted: 0.0)


def test_true_labels_reach_the_optimizer_by_default(tmp_path, monkeypatch):
    _, optimizer, _, _ = _run(tmp_path, monkeypatch, {}, oracle=False)  # always "Yes": wrong on the "No" rows
    rows = _rows(optimizer.prompts)
    assert rows and all(label == TRUTH[text] == "No" and pred == "Yes" for text, label, pred in rows)


def test_pseudo_errors_show_correct_rows_with_flipped_predictions(tmp_path, monkeypatch):
    _, optimizer, _, _ = _run(tmp_path, monkeypatch, {"feedback": {"errors": "pseudo"}})
    rows = _rows(optimizer.prompts)
    assert len(rows) >= 4  # the target made no real error: every row shown is fabricated
    assert all(label == TRUTH[text] and pred == FLIP[TRUTH[text]] for text, label, pred in rows)


def test_no_evaluation_shows_neither_labels_nor_correctness(tmp_path, monkeypatch):
    _, optimizer, _, _ = _run(tmp_path, monkeypatch, {"feedback": {"show_evaluation": False}}, oracle=False)
    rows = _rows(optimizer.prompts)
    assert rows and all(label is None and pred == "Yes" for _, label, pred in rows)
    assert {TRUTH[text] for text, _, _ in rows} == {"Yes", "No"}  # right and wrong rows alike: no error selection
    for p in optimizer.prompts:
        assert "Label:" not in p and "wrong" not in p.lower() and "correct label" not in p.lower()


def test_validated_acceptance_validates_on_rows_the_errors_never_came_from(tmp_path, monkeypatch):
    from apo_local.search.splits import train_rows, validation_rows

    data = {
        "selection": {"acceptance": "validated", "validation_k": 2, "validation_size": 8},
        "protegi": {"mc_samples": 0},
    }
    target, _, rnd, phases = _run(tmp_path, monkeypatch, data)
    cfg = build_config({"train_limit": 40, "search": {"minibatch_size": 8}, **data})
    val = {ex.input.strip() for ex in validation_rows(TASK, cfg)}
    held = {ex.input.strip() for ex in validation_rows(TASK, cfg)[:8]}  # the rule scores the first validation_size
    assert len(held) == 8 and not val & {ex.input.strip() for ex in train_rows(TASK, cfg)}
    target_phases = [phase for role, phase in phases if role == "target"]
    minibatch, select = (target.batches[target_phases.index(p)] for p in ("minibatch", "select"))
    assert select == held and not minibatch & held
    assert any(c.get("pulls") == 8 for c in rnd["candidates"])


ABO_READY = (
    "Follow these steps:\n1. Read the statement.\n2. Compare it with known facts.\n3. Answer Yes or No."
    "\n\nDemonstration:\nStep 1: It is about taxes.\nStep 2: It exaggerates.\nStep 3: Yes"
)


@pytest.mark.parametrize("answer", ["generate", "logprobs"])
def test_abo_executes_the_steps_and_revises_the_step_the_optimizer_judged_failed(answer, tmp_path, monkeypatch):
    data = {
        "search": {"proposer": "abo", "initial_prompt": ABO_READY, "max_expansion": 4},
        "protegi": None,
        "abo": {"revise_samples": 1, "errors_per_revision": 2, "work_tokens": 24, "answer": answer},
    }
    target, optimizer, rnd, phases = _run(tmp_path, monkeypatch, data, oracle=False)
    judged = [p for p in optimizer.prompts if "judge whether" in p]
    assert judged and all("Step 1: I read the statement. Step 2: I compare it." in p for p in judged)
    revised = [c for c in rnd["candidates"] if c["operator"] == "abo"]
    assert revised and all("\n2. Weigh the claim against known facts" in c["text"] for c in revised)
    assert all("\n1. Read the statement.\n" in c["text"] for c in revised)  # only the judged step changed
    assert "step 2 was judged the first step not followed" in revised[0]["gradient"]
    target_phases = {phase for role, phase in phases if role == "target"}
    if answer == "generate":  # every score is an executed answer; the work is the answer's own
        assert len(target.scored) == 0 and {"minibatch", "select", "final"} <= target_phases
        asked = [p for p in target.prompts if any(c["text"] in p for c in revised)]
        assert asked and all(WORK in p for p in asked)  # a revised prompt asks the target to work, then answer
        assert all(c["text"].endswith(WORK) for c in revised)
        assert "abo_work" not in target_phases
    else:  # the ablation: log-prob scores, and a separate narration for the judgement
        assert len(target.scored) > 0 and "abo_work" in target_phases
        assert not any(WORK in c["text"] for c in revised)
