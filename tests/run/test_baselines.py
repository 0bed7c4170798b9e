"""Constant baselines, the headline sentence and the final pick (pure logic, no model)."""

from __future__ import annotations

import pytest

from apo_local.run.baselines import best_constant, constant_evaluations, majority_label
from apo_local.run.final_pick import REWARD, pick_on_validation
from apo_local.run.headline import SplitStats, headline
from apo_local.scoring import Prediction, make_evaluation
from apo_local.tasks import Example, load_task
from apo_local.tasks.metrics import balanced_accuracy


@pytest.fixture(scope="module")
def liar():
    return load_task("liar")  # f1 of "Yes"


def rows(golds: str) -> list[Example]:
    return [Example(f"t-{i}", f"input {i}", {"Y": "Yes", "N": "No"}[g]) for i, g in enumerate(golds)]


def predicted(task, text: str, answers: str, examples):
    preds = [Prediction({"Y": "Yes", "N": "No"}[a]) for a in answers]
    return make_evaluation(task, text, preds, examples)


def test_constant_answers_score_what_the_arithmetic_says(liar):
    test = rows("Y" * 52 + "N" * 48)
    consts = constant_evaluations(liar, test)
    assert set(consts) == {"Yes", "No"}
    # always Yes: precision 0.52, recall 1 -> f1 = 2 * 0.52 / 1.52; always No never predicts the positive label
    assert consts["Yes"].metrics["f1"] == pytest.approx(2 * 0.52 / 1.52)
    assert consts["Yes"].metrics["accuracy"] == pytest.approx(0.52)
    assert consts["No"].metrics["f1"] == 0.0 and consts["No"].metrics["accuracy"] == pytest.approx(0.48)
    assert consts["Yes"].predicted_distribution == {"Yes": 100}
    assert best_constant(consts, "f1", majority="No") == "Yes"  # best on the metric, whatever the majority
    assert best_constant(consts, "accuracy", majority="No") == "Yes"


def test_majority_label_of_the_training_split_and_its_ties(liar):
    assert majority_label(liar, rows("NNY")) == "No"
    assert majority_label(liar, rows("YN")) == liar.labels[0]  # a tie: the task's label order
    assert majority_label(liar, []) is None


def test_a_generation_task_has_no_constant_baseline(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"input": "1+1", "label": "2"}\n{"input": "2+2", "label": "4"}\n')
    (tmp_path / "t.jsonl").write_text('{"input": "3+3", "label": "6"}\n')
    (tmp_path / "t.jinja").write_text("{{ instruction }} {{ input }}")
    (tmp_path / "task.yaml").write_text(
        "name: sums\nkind: generation\nmetric: numeric_match\ntemplate: t.jinja\n"
        "instruction_text: Add.\n"
        "data: {input_column: input, label_column: label, splits: {train: train.jsonl, test: t.jsonl}}\n"
    )
    task = load_task(tmp_path / "task.yaml")
    assert constant_evaluations(task, task.split("test")) == {}


def test_balanced_accuracy_is_blind_to_a_shift_toward_one_label():
    golds = ["Yes"] * 52 + ["No"] * 48
    assert balanced_accuracy([("Yes", g) for g in golds]) == pytest.approx(0.5)
    assert balanced_accuracy([("No", g) for g in golds]) == pytest.approx(0.5)
    assert balanced_accuracy([(g, g) for g in golds]) == 1.0
    # recall Yes 40/52, recall No 24/48
    mixed = [("Yes" if i < 40 else "No", "Yes") for i in range(52)] + [
        ("No" if i < 24 else "Yes", "No") for i in range(48)
    ]
    assert balanced_accuracy(mixed) == pytest.approx((40 / 52 + 24 / 48) / 2)


def _result(task, test, selected, initial, *, kept=False):
    stats = SplitStats(task.metric, test)
    consts = constant_evaluations(task, test)
    top = best_constant(consts, "f1", "Yes")
    return {
        "metric": "f1",
        "selected_prompt": "i" if kept else "s",
        "initial_prompt": "i",
        "selected_test": stats.summary(selected),
        "initial_test": stats.summary(initial),
        "selected_vs_initial": stats.paired(selected, initial),
        "constant_baselines": {
            "best": top,
            "majority_label": "Yes",
            "by_label": {k: stats.summary(e) for k, e in consts.items()},
        },
        "selected_vs_constant": stats.paired(selected, consts[top]),
    }


def test_headline_says_no_gain_when_a_constant_answer_scores_as_well(liar):
    """The demo's case: f1 rises a lot because the prompt answers Yes far more often, while always-Yes
    scores higher still on the same rows."""
    test = rows("Y" * 52 + "N" * 48)
    initial = predicted(liar, "i", "N" * 40 + "Y" * 12 + "N" * 30 + "Y" * 18, test)  # mostly No
    selected = predicted(liar, "s", "Y" * 40 + "N" * 12 + "Y" * 25 + "N" * 23, test)  # mostly Yes
    res = _result(liar, test, selected, initial)
    assert res["selected_vs_initial"]["f1"]["ci"][0] > 0  # the metric "rose significantly"
    assert "balanced_accuracy" in res["selected_vs_initial"]
    line = headline(res)
    # always-Yes scores what the selected prompt scores: said in plain words, not as "does not beat"
    assert line.startswith(
        "headline: no gain shown over a constant answer: the selected prompt scores the same as "
        "always answering 'Yes' (f1 0.684 vs 0.684), but these 100 test rows cannot tell them apart"
    )


def test_a_prompt_that_answers_the_constant_on_every_row_is_named_as_that_constant(liar):
    """The demo's case with a stronger optimizer: the selected prompt answers Yes on every test row."""
    test = rows("Y" * 52 + "N" * 48)
    initial = predicted(liar, "i", "N" * 40 + "Y" * 12 + "N" * 30 + "Y" * 18, test)
    selected = predicted(liar, "s", "Y" * 100, test)
    line = headline(_result(liar, test, selected, initial))
    assert line == (
        "headline: no gain over a constant answer: the selected prompt answers 'Yes' on every one of "
        "these 100 test rows, so it is that constant answer (f1 0.684)"
    )
    one_no = predicted(liar, "s", "Y" * 99 + "N", test)  # one row differs: the general sentence
    assert "on every one of" not in headline(_result(liar, test, one_no, initial))


def test_headline_names_a_real_gain_only_when_it_beats_the_initial_and_the_constant(liar):
    test = rows("Y" * 50 + "N" * 50)
    initial = predicted(liar, "i", "Y" * 25 + "N" * 25 + "Y" * 25 + "N" * 25, test)  # chance
    selected = predicted(liar, "s", "Y" * 45 + "N" * 5 + "N" * 45 + "Y" * 5, test)  # 90% right
    line = headline(_result(liar, test, selected, initial))
    assert line.startswith("headline: better than the initial prompt") and "it beats always answering" in line
    same = headline(_result(liar, test, selected, selected))
    assert same.startswith("headline: no detectable change")
    worse = headline(_result(liar, test, initial, selected))
    assert worse.startswith(
        "headline: no gain over a constant answer: the selected prompt scores below always "
        "answering 'Yes' on these 100 test rows"
    )  # chance is no better than always-Yes
    kept = headline(_result(liar, test, selected, selected, kept=True))
    assert kept.startswith("headline: the search kept the initial prompt")


def test_headline_without_constant_baselines_reads_the_paired_interval(liar):
    test = rows("Y" * 50 + "N" * 50)
    a = predicted(liar, "i", "Y" * 25 + "N" * 25 + "Y" * 25 + "N" * 25, test)
    b = predicted(liar, "s", "Y" * 45 + "N" * 5 + "N" * 45 + "Y" * 5, test)
    res = _result(liar, test, a, b)
    del res["constant_baselines"], res["selected_vs_constant"]
    assert headline(res).startswith("headline: worse than the initial prompt")


def test_the_pick_uses_the_reward_and_lets_the_initial_prompt_compete():
    scores = {
        "edit": {"f1": 0.68, REWARD: 0.50, "reward_name": "balanced_accuracy"},  # always-Yes-like
        "other": {"f1": 0.55, REWARD: 0.58, "reward_name": "balanced_accuracy"},
        "initial": {"f1": 0.40, REWARD: 0.61, "reward_name": "balanced_accuracy"},
    }
    beam = ["edit", "other"]
    assert pick_on_validation(scores, REWARD, beam, "initial", 50) == (
        "initial",
        "validation (50 rows, balanced accuracy; the initial prompt scored best)",
    )
    reference = {k: v for k, v in scores.items() if k in beam}
    assert pick_on_validation(reference, "f1", beam, "initial", 50) == ("edit", "validation (50 rows)")
    tie = {
        "edit": {"f1": 0.5, REWARD: 0.6, "reward_name": "accuracy"},
        "initial": {"f1": 0.5, REWARD: 0.6, "reward_name": "accuracy"},
    }
    assert pick_on_validation(tie, REWARD, ["edit"], "initial", 8)[0] == "edit"  # ties go to the beam
    kept = {"initial": {"f1": 0.5, REWARD: 0.6, "reward_name": "accuracy"}}
    assert pick_on_validation(kept, REWARD, ["initial"], "initial", 8) == ("initial", "validation (8 rows, accuracy)")
