"""Calibrated label scoring (``scoring.calibration``): the arithmetic of the offsets and the calibrated argmax on
fake score matrices, and the scorer's use of them with a fake engine (pure logic: which prompts it scores, what
it stores to reproduce a prediction, what it leaves alone)."""

from __future__ import annotations

import math

import pytest

from apo_local import calibration as calib
from apo_local.engine.protocol import ChoiceScores
from apo_local.run.baselines import constant_evaluations
from apo_local.scoring import Evaluation, Scorer, prediction_records
from apo_local.support.errors import ApoError
from apo_local.tasks import Example, load_task
from tests.helpers.scripted import ScriptedEngine

LN = math.log


def test_batch_offsets_are_each_labels_mean_normalised_log_prob():
    rows = [[LN(0.9), LN(0.1)], [LN(0.6), LN(0.4)], [LN(0.3), LN(0.7)]]
    offs = calib.offsets("batch", rows, 2)
    assert offs == pytest.approx([(LN(0.9) + LN(0.6) + LN(0.3)) / 3, (LN(0.1) + LN(0.4) + LN(0.7)) / 3])
    # Unnormalised rows (a multi-token label's raw log-prob) give the same offsets: each row is renormalised.
    raw = [[x - 2.5 for x in r] for r in rows]
    assert calib.offsets("batch", raw, 2) == pytest.approx(offs)


def test_content_free_offsets_are_the_log_of_each_labels_mean_probability():
    rows = [[LN(0.8), LN(0.2)], [LN(0.6), LN(0.4)], [LN(0.7), LN(0.3)]]
    assert calib.offsets("content-free", rows, 2) == pytest.approx([LN(0.7), LN(0.3)])


def test_calibration_turns_a_label_lean_into_the_right_predictions():
    """A prompt that says Yes on every row (its Yes log-prob is higher everywhere) still ranks the rows; removing
    the batch's mean lean makes the rows above the mean Yes and those below No."""
    p_yes = [0.95, 0.9, 0.8, 0.7, 0.6]  # the first two rows are the Yes rows
    rows = [[LN(p), LN(1 - p)] for p in p_yes]
    assert [ChoiceScores(tuple(r), 1).best for r in rows] == [0] * 5  # uncalibrated: always label 0
    offs = calib.offsets("batch", rows, 2)
    assert [calib.calibrated_choice(r, offs) for r in rows] == [0, 0, 1, 1, 1]
    assert calib.calibrated_choice(rows[0], (0.0, 0.0)) == 0  # zero offsets: the plain argmax


def test_ties_go_to_the_first_label_and_unscorable_rows_to_none():
    assert calib.calibrated_choice([LN(0.5), LN(0.5)], (0.0, 0.0)) == 0
    assert calib.calibrated_choice([-1.0, -2.0], (0.0, -1.0)) == 0  # -1 and -1: a tie after the offsets
    assert calib.calibrated_choice([-1.0, -2.0], (0.0, -1.5)) == 1
    assert calib.calibrated_choice([-math.inf, -math.inf], (0.0, 0.0)) is None
    assert calib.calibrated_choice([-math.inf, -3.0], (-0.1, -5.0)) == 1  # a label the model cannot say stays out


def test_offsets_skip_unscorable_rows_and_fall_back_to_zeros():
    rows = [[LN(0.9), LN(0.1)], [-math.inf, -math.inf], [LN(0.5), LN(0.5)]]
    assert calib.offsets("batch", rows, 2) == pytest.approx(calib.offsets("batch", [rows[0], rows[2]], 2))
    assert calib.offsets("batch", [[-math.inf, -math.inf]], 2) == (0.0, 0.0)
    assert calib.offsets("batch", [[0.0, -math.inf]], 2) == (0.0, 0.0)  # a label no row can say: no estimate
    assert calib.offsets("none", [[LN(0.9), LN(0.1)]], 2) == (0.0, 0.0)


def test_batch_calibration_inputs_are_a_fixed_sample_of_training_inputs():
    train = [f"row {i}" for i in range(200)]
    first = calib.calibration_inputs("batch", train)
    assert len(first) == calib.CALIBRATION_ROWS == len(set(first)) and set(first) <= set(train)
    assert calib.calibration_inputs("batch", train) == first  # the same for every run
    assert first != train[: calib.CALIBRATION_ROWS]  # a sample, not the head of a possibly sorted split
    assert calib.calibration_inputs("batch", train[:5]) == train[:5]
    assert calib.calibration_inputs("content-free", train) == ["N/A", "", "[MASK]"]
    assert calib.calibration_inputs("none", train) == []


# -- the scorer, on a fake engine -------------------------------------------------------------------------------


def _leaning_scores(prompt: str, labels) -> ChoiceScores:
    """Label log-probs from the prompt text, for every instruction: P(Yes) = 0.9 for a row whose input mentions
    "lie", 0.6 for one that mentions "fact", else 0.75 (a model that leans to Yes)."""
    row = prompt.split("# Prediction")[-1]
    p_yes = 0.9 if "lie" in row else 0.6 if "fact" in row else 0.75
    return ChoiceScores((LN(p_yes), LN(1 - p_yes)), 10)


def LeaningEngine() -> ScriptedEngine:
    """The shared scripted engine with the leaning script; ``scored``: what it was asked."""
    return ScriptedEngine(scores=_leaning_scores)


def rows(n_lies: int, n_true: int) -> list[Example]:
    return [Example(f"t-{i}", f"Statement: a lie number {i}", "Yes") for i in range(n_lies)] + [
        Example(f"t-{n_lies + i}", f"Statement: a fact number {i}", "No") for i in range(n_true)
    ]


def test_the_scorer_predicts_with_offsets_and_stores_what_reproduces_them():
    task = load_task("liar")
    engine = LeaningEngine()
    test = rows(3, 5)
    plain = Scorer(task, engine, calibration="none").evaluate("Say Yes or No.", test)
    assert plain.predicted_distribution == {"Yes": 8} and plain.calibration is None

    engine = LeaningEngine()
    scorer = Scorer(task, engine, calibration="content-free")
    ev = scorer.evaluate("Say Yes or No.", test)
    cal = ev.calibration
    assert cal["method"] == "content-free" and cal["inputs"] == 3
    assert cal["offsets"] == pytest.approx({"Yes": LN(0.75), "No": LN(0.25)})  # the content-free inputs' lean
    assert [p.label for p in ev.predictions] == ["Yes"] * 3 + ["No"] * 5
    assert len(engine.scored) == 3 + 8  # the three content-free prompts, once, then the rows
    assert ev.to_dict()["calibration"] == cal
    for record, _p in zip(prediction_records(task, test, ev), ev.predictions):  # each prediction reproduces
        lp = record["logprobs"]
        assert record["parsed"] == max(task.labels, key=lambda y: (lp[y] - cal["offsets"][y], -task.labels.index(y)))
    assert scorer.evaluate("Say Yes or No.", test).predictions == ev.predictions and len(engine.scored) == 11


def test_batch_calibration_scores_a_fixed_training_sample_once_per_prompt():
    task = load_task("liar")
    engine = LeaningEngine()
    scorer = Scorer(task, engine, calibration="batch")
    scorer.evaluate_many(["Say Yes or No.", "Answer Yes or No."], rows(2, 2))
    train_inputs = {ex.input for ex in task.split("train")}
    calibration_prompts = engine.scored[: 2 * calib.CALIBRATION_ROWS]
    assert len(engine.scored) == 2 * calib.CALIBRATION_ROWS + 8
    assert all(any(t in p for t in train_inputs) for p in calibration_prompts)
    new_rows = [Example("u-0", "Statement: another lie", "Yes"), Example("u-1", "Statement: a fact", "No")]
    assert scorer.rewards([("Say Yes or No.", ex) for ex in new_rows]) == [1.0, 1.0]  # a known prompt: only its rows
    assert len(engine.scored) == 2 * calib.CALIBRATION_ROWS + 8 + 2


def test_the_memo_keeps_the_log_probs_through_a_checkpoint():
    task = load_task("liar")
    scorer = Scorer(task, LeaningEngine(), calibration="batch")
    scorer.evaluate("Say Yes or No.", rows(1, 1))
    again = Scorer(task, LeaningEngine(), calibration="batch")
    again.import_memo(scorer.export_memo())
    assert again._memo == scorer._memo
    plain = Scorer(task, LeaningEngine())
    plain.evaluate("Say Yes or No.", rows(1, 1))
    assert all(len(v) == 3 for r in plain.export_memo().values() for v in r.values())  # uncalibrated: as before


def test_constant_baselines_stay_uncalibrated():
    """Calibration changes the target's predictions, never the constant answers the headline compares with."""
    task = load_task("liar")
    test = rows(3, 5)
    for label, ev in constant_evaluations(task, test).items():
        assert isinstance(ev, Evaluation) and ev.calibration is None
        assert ev.predicted_distribution == {label: 8}


def test_bad_calibration_and_generate_mode():
    task = load_task("liar")
    with pytest.raises(ApoError, match="scoring.calibration: unknown 'platt'"):
        Scorer(task, LeaningEngine(), calibration="platt")
    assert Scorer(task, LeaningEngine(), mode="generate", calibration="batch").calibration == "none"


def test_the_config_key_reaches_the_schema():
    from apo_local.run.config import build_config

    assert build_config({}).scoring.calibration in calib.CALIBRATIONS
    assert build_config({"scoring": {"calibration": "batch"}}).scoring.calibration == "batch"
    with pytest.raises(ApoError, match="scoring.calibration"):
        build_config({"scoring": {"calibration": "platt"}})


def test_the_offsets_reach_the_results_summary_of_the_prompt():
    """results.json's initial_test / best_test / selected_test are ``SplitStats.summary`` of the evaluation: the
    prompt's offsets go with it."""
    from apo_local.run.headline import SplitStats

    task = load_task("liar")
    test = rows(3, 5)
    ev = Scorer(task, LeaningEngine(), calibration="content-free").evaluate("Say Yes or No.", test)
    summary = SplitStats(task.metric, test).summary(ev)
    assert summary["calibration"] == ev.calibration and summary["metrics"]["f1"] == 1.0
    plain = Scorer(task, LeaningEngine()).evaluate("Say Yes or No.", test)
    assert "calibration" not in SplitStats(task.metric, test).summary(plain)
