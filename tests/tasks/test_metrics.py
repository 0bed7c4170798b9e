"""Metrics, label parsing and number parsing, on hand-computed cases."""

import pytest

from apo_local.support.errors import ApoError
from apo_local.tasks import get_metric, normalize_answer, parse_label, parse_number

LABELS = ("Yes", "No")


def test_binary_f1():
    metric = get_metric("f1", positive_label="Yes", labels=LABELS)
    golds = ["Yes", "Yes", "Yes", "No", "No"]
    predictions = ["Yes", None, "No", "Yes", "No"]
    # tp=1, fp=1, fn=2 -> F1 = 2/(2+1+2) = 0.4; accuracy 2/5
    assert metric.compute(predictions, golds) == {"f1": 0.4, "accuracy": 0.4, "n": 5, "unparsed": 1}
    assert [metric.example_score(p, g) for p, g in zip(predictions, golds)] == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert metric.compute(["No", "No"], ["No", "No"])["f1"] == 0.0  # no positive anywhere


def test_f1_needs_a_positive_label_in_the_label_set():
    with pytest.raises(ApoError, match="needs positive_label"):
        get_metric("f1", labels=LABELS)
    with pytest.raises(ApoError, match="positive_label 'Maybe' is not one of Yes, No"):
        get_metric("f1", positive_label="Maybe", labels=LABELS)


def test_macro_f1():
    metric = get_metric("macro_f1", labels=("A", "B", "C", "D"))
    golds = ["A", "A", "B", "B", "C"]
    predictions = ["A", "B", "B", None, "A"]
    # A: tp1 fp1 fn1 -> 0.5; B: tp1 fp1 fn1 -> 0.5; C: tp0 -> 0; D absent everywhere -> left out
    assert metric.compute(predictions, golds)["macro_f1"] == pytest.approx(1 / 3)
    assert get_metric("macro_f1").compute(predictions, golds)["macro_f1"] == pytest.approx(1 / 3)


def test_accuracy_and_exact_match():
    result = get_metric("accuracy").compute(["Yes", "No", None, "No"], ["Yes", "Yes", "No", "No"])
    assert result == {"accuracy": 0.5, "n": 4, "unparsed": 1}
    assert get_metric("exact_match").compute([" Paris "], ["Paris"])["exact_match"] == 1.0
    assert get_metric("accuracy").compute([], []) == {"accuracy": 0.0, "n": 0, "unparsed": 0}


def test_normalized_match():
    assert normalize_answer("  The  Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"
    metric = get_metric("normalized_match")
    predictions = ["the Eiffel Tower.", "An apple", "Paris, France", None]
    golds = ["Eiffel tower", "apple", "Paris", "x"]
    assert metric.compute(predictions, golds) == {"normalized_match": 0.5, "accuracy": 0.5, "n": 4, "unparsed": 1}


@pytest.mark.parametrize(
    "text, number",
    [
        ("42", 42.0),
        ("The answer is -3.5 apples", -3.5),
        ("$1,234.50", 1234.5),
        ("1,2", 2.0),
        ("x = .5e2", 50.0),
        ("none", None),
        ("I have 4 stoves and 8 instruments, so 8.", 8.0),
        ("3 apples + 2 pears = 5", 5.0),
    ],
)
def test_parse_number(text, number):
    assert parse_number(text) == number


def test_numeric_match():
    metric = get_metric("numeric_match")
    predictions = ["The answer is 1,000.", "0.3333334", "0.3334", "about 7", "no idea"]
    golds = ["1000", "0.3333333", "0.3333333", "#### 7", "5"]
    assert [metric.example_score(p, g) for p, g in zip(predictions, golds)] == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert metric.compute(predictions, golds)["numeric_match"] == pytest.approx(0.6)
    assert metric.compute(predictions, golds)["unparsed"] == 1  # "no idea" holds no number
    assert metric.example_score("I have 4 stoves and 8 instruments, so 8.", "8") == 1.0  # the last number counts


def test_custom_metric(tmp_path, monkeypatch):
    (tmp_path / "custom_metric_for_test.py").write_text(
        "def share_yes(predictions, golds):\n    return sum(p == 'Yes' for p in predictions) / len(predictions)\n"
        "def broken(predictions, golds):\n    raise ValueError('bad\\nthing')\n"
        "NOT_A_FUNCTION = 3\n"
    )
    monkeypatch.syspath_prepend(tmp_path)
    metric = get_metric("custom_metric_for_test:share_yes")
    result = metric.compute(["Yes", "No", None, "Yes"], ["Yes", "Yes", "No", "No"])
    assert result == {"custom_metric_for_test:share_yes": 0.5, "accuracy": 0.25, "n": 4, "unparsed": 1}
    with pytest.raises(ApoError, match=r"^metric 'custom_metric_for_test:broken' failed: bad$"):
        get_metric("custom_metric_for_test:broken").compute(["Yes"], ["Yes"])
    with pytest.raises(ApoError, match="has no function 'NOT_A_FUNCTION'"):
        get_metric("custom_metric_for_test:NOT_A_FUNCTION")
    with pytest.raises(ApoError, match="cannot import module 'no_such_module_xyz'"):
        get_metric("no_such_module_xyz:f")


def test_unknown_metric():
    with pytest.raises(ApoError, match=r"unknown metric 'bleu' \(metrics: accuracy, f1, .*; or module:function\)"):
        get_metric("bleu")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes", "Yes"),
        ("  no.", "No"),
        ("NO, because the statement is false", "No"),
        ("Label: Yes", "Yes"),
        ("**Yes**", "Yes"),
        ("I think the answer is no, not yes", "No"),
        ("Nobody knows", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_parse_label(text, expected):
    assert parse_label(text, LABELS) == expected


def test_parse_label_prefers_the_longer_label_at_the_same_position():
    labels = ("entailment", "not entailment")
    assert parse_label("Not entailment.", labels) == "not entailment"
    assert parse_label("Entailment, not contradiction", labels) == "entailment"
    assert parse_label("positive (very)", ("very positive", "positive")) == "positive"


def test_mismatched_lengths_are_a_programming_error():
    with pytest.raises(ValueError):
        get_metric("accuracy").compute(["Yes"], [])
