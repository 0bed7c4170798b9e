"""The judge metric's pure logic (a stand-in judge engine): calibration, batching, reasons, agreement, task checks."""

from __future__ import annotations

import math

import pytest

from apo_local.engine.protocol import ChoiceScores, Generation
from apo_local.support.errors import ApoError
from apo_local.tasks.judge import CONTENT_FREE, Judge, agreement
from tests.helpers.scripted import ScriptedEngine


def _grade(p: str, choices) -> ChoiceScores:
    """Leans to "Yes" (prior 0.8 on the content-free pair); more so when the output equals the reference."""
    ref = p.split("Reference answer: ")[1].split("\n")[0]
    got = p.split("Output to grade: ")[1].split("\n")[0]
    yes = 0.8 if got == CONTENT_FREE else (0.95 if got == ref else 0.6)
    return ChoiceScores((math.log(yes), math.log(1 - yes)), 10)


def StandInJudge() -> ScriptedEngine:
    """The shared scripted engine as a judge: the grading script, and one fixed reason."""
    return ScriptedEngine(reply=lambda r: Generation(("The verdict differs from the reference.",), 5, 7), scores=_grade)


def test_calibration_maps_the_prior_to_one_half_and_removes_the_yes_bias():
    judge = Judge("Same verdict as the reference.")
    judge.attach(StandInJudge())
    assert judge.calibrated((math.log(0.8), math.log(0.2))) == pytest.approx(0.5)
    right, wrong, none = judge.grade([("Yes", "Yes"), ("No", "Yes"), (None, "Yes")])
    assert right > 0.5 > wrong and none == 0.0  # raw P(Yes) of the wrong output is 0.6: calibrated below 0.5


def test_grades_are_batched_and_remembered():
    engine = StandInJudge()
    judge = Judge("rubric")
    judge.attach(engine)
    judge.grade([("a", "b"), ("a", "b"), ("c", "c")])
    assert engine.score_calls == 2 and len(engine.scored) == 3  # the prior, then the two distinct pairs at once
    judge.score("a", "b")
    assert engine.score_calls == 2


def test_judge_without_engine_is_one_line():
    with pytest.raises(ApoError, match="no judge engine"):
        Judge("rubric").score("a", "b")


def test_reasons_reach_the_error_block():
    from apo_local.search.meta_prompts import MetaPrompts
    from apo_local.tasks import Example

    judge = Judge("rubric")
    judge.attach(StandInJudge())
    rows = [(Example(id="x1", input="Statement: ...", label="Yes"), "No")]
    block = MetaPrompts().errors(rows, notes=judge.reasons([("No", "Yes")]))
    assert "Judge: The verdict differs from the reference." in block
    assert "Judge:" not in MetaPrompts().errors(rows)


def test_graded_errors_are_below_one_half():
    from apo_local.search.feedback.corruption import real_errors
    from apo_local.tasks import Example

    a, b, c = (Example(id=i, input="t", label="Yes") for i in "abc")
    assert [ex.id for ex, _ in real_errors([(a, "x", 0.2), (b, "y", 0.7), (c, "z", 0.0)])] == ["a", "c"]


def test_agreement():
    got = agreement([0.9, 0.2, 0.7, 0.1], [True, False, False, False])
    assert got["agreement"] == 0.75 and got["judge_only"] == 1 and got["both_fail"] == 2
    assert got["kappa"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        agreement([], [])


def test_task_needs_a_rubric(tmp_path):
    from apo_local.tasks import load_task

    (tmp_path / "t.jinja").write_text("{{ instruction }} {{ input }}")
    (tmp_path / "train.jsonl").write_text('{"text": "q", "label": "a"}\n')
    doc = (
        "name: j\nkind: generation\nmetric: judge\ntemplate: t.jinja\ninstruction_text: Answer.\n"
        "data: {format: jsonl, input_column: text, label_column: label, splits: {train: train.jsonl}}\n"
    )
    (tmp_path / "task.yaml").write_text(doc)
    with pytest.raises(ApoError, match="judge.rubric"):
        load_task(tmp_path / "task.yaml")
    (tmp_path / "rubric.txt").write_text("Same meaning as the reference.")
    (tmp_path / "task.yaml").write_text(doc + "judge: {rubric: rubric.txt}\n")
    task = load_task(tmp_path / "task.yaml")
    assert task.metric.name == "judge" and task.metric.judge.rubric.startswith("Same meaning")
