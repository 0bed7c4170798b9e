"""The headline sentence: each wording branch on known inputs, and a property over random prediction vectors
(a gain is headlined only when the paired intervals say so)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apo_local.run.baselines import best_constant, constant_evaluations
from apo_local.run.headline import SplitStats, headline
from apo_local.scoring import Prediction, make_evaluation
from apo_local.tasks import Example, load_task


def _diff(d, lo, hi, n=16):
    return {"diff": d, "ci": [lo, hi], "p": 0.5, "n": n}


def _result(
    *,
    metric="macro_f1",
    selected=0.302,
    constant=0.182,
    vs_constant=(0.120, 0.0, 0.288),
    kept=True,
    vs_initial=(0.0, 0.0, 0.0),
    balanced=None,
    replies=None,
    selected_by="validation (4 rows, balanced accuracy)",
    initial_validation=None,
    n=16,
):
    res = {
        "metric": metric,
        "selected_prompt": "i" if kept else "s",
        "initial_prompt": "i",
        "selected_test": {"metrics": {metric: selected}},
        "constant_baselines": {"best": "complaint", "by_label": {"complaint": {"metrics": {metric: constant}}}},
        "selected_vs_constant": {"n": n, metric: _diff(*vs_constant, n=n)},
        "selected_vs_initial": {"n": n, metric: _diff(*vs_initial, n=n)},
        "replies": replies or {"proposals": 3, "accepted": 2, "rejected": {"drops label words": 1}},
        "selected_by": selected_by,
        "initial_validation": initial_validation,
    }
    if balanced is not None:
        res["selected_vs_initial"]["balanced_accuracy"] = _diff(*balanced, n=n)
    return res


def test_an_interval_touching_zero_says_which_way_the_scores_point_and_that_the_rows_cannot_tell():
    line = headline(_result(kept=False))
    assert line == (
        "headline: no gain shown over a constant answer: the selected prompt scores above always answering "
        "'complaint' (macro_f1 0.302 vs 0.182), but these 16 test rows cannot tell them apart: difference "
        "+0.120 [+0.000, +0.288]"
    )
    assert "does not beat" not in line
    lower = headline(_result(kept=False, selected=0.15, vs_constant=(-0.032, -0.2, 0.1)))
    assert (
        "the selected prompt scores below always answering 'complaint' (macro_f1 0.150 vs 0.182), but these 16" in lower
    )
    below = headline(_result(kept=False, selected=0.05, vs_constant=(-0.132, -0.3, -0.01)))
    assert below.startswith(
        "headline: no gain over a constant answer: the selected prompt scores below always "
        "answering 'complaint' on these 16 test rows (macro_f1 0.050 vs 0.182; difference -0.132"
    )


def test_when_no_proposal_survived_the_headline_says_so_and_why():
    rejected = {"proposals": 4, "accepted": 0, "rejected": {"drops label words": 3, "too long": 1}, "replies": 4}
    line = headline(_result(replies=rejected))
    assert line.startswith(
        "headline: no gain shown over a constant answer: the initial prompt (kept by the search) "
        "scores above always answering 'complaint'"
    )
    assert line.endswith(
        "; the search kept the initial prompt: no proposal survived: all 4 proposals were rejected "
        "(drops label words 3, too long 1)"
    )
    none = headline(_result(replies={"proposals": 0, "accepted": 0, "replies": 2}, vs_constant=(0.2, 0.1, 0.3)))
    assert none.startswith(
        "headline: the search kept the initial prompt: no proposal survived: the optimizer's 2 "
        "replies gave no candidate prompt; it beats always answering 'complaint'"
    )


def test_the_validation_sentence_only_where_a_validation_comparison_happened():
    with_validation = headline(_result(vs_constant=(0.2, 0.1, 0.3), initial_validation={"reward": 0.5}))
    assert with_validation.startswith(
        "headline: the search kept the initial prompt: no final beam prompt beat it on "
        "the validation rows; it beats always answering"
    )
    without = headline(_result(vs_constant=(0.2, 0.1, 0.3), selected_by="selection estimate"))
    assert "validation" not in without
    assert without.startswith(
        "headline: the search kept the initial prompt: the final pick (selection estimate) chose it"
    )


def test_f1_rose_but_balanced_accuracy_did_not():
    line = headline(
        _result(
            metric="f1",
            kept=False,
            selected=0.7,
            constant=0.5,
            vs_constant=(0.2, 0.05, 0.35),
            vs_initial=(0.15, 0.05, 0.25),
            balanced=(0.01, -0.05, 0.07),
        )
    )
    assert line.startswith(
        "headline: f1 rose (+0.150 [+0.050, +0.250]) but balanced accuracy did not "
        "(+0.010 [-0.050, +0.070]): the rise may come from answering one label more often"
    )
    both = headline(
        _result(
            metric="f1",
            kept=False,
            selected=0.7,
            constant=0.5,
            vs_constant=(0.2, 0.05, 0.35),
            vs_initial=(0.15, 0.05, 0.25),
            balanced=(0.1, 0.02, 0.18),
        )
    )
    assert both.startswith("headline: better than the initial prompt (f1 +0.150 [+0.050, +0.250])")


# -- the property: a gain is headlined only when the paired intervals exclude zero --------------------------------

_LIAR = load_task("liar")  # f1 of "Yes"


def _evaluation(text: str, answers: list[str], examples):
    return make_evaluation(_LIAR, text, [Prediction(a) for a in answers], examples)


labels = st.sampled_from(["Yes", "No"])


# per row: the gold label, and whether each prompt answers it (0: the other label; most draws answer right, so
# gains, losses and ties all occur)
row = st.tuples(labels, st.integers(0, 3), st.integers(0, 3))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, min_size=12, max_size=30))
def test_a_gain_headline_implies_the_paired_intervals_are_above_zero(rows):
    other = {"Yes": "No", "No": "Yes"}
    golds = [g for g, _, _ in rows]
    selected_answers = [g if s else other[g] for g, s, _ in rows]
    initial_answers = [g if i > 1 else other[g] for g, _, i in rows]
    examples = [Example(f"t-{i}", f"input {i}", g) for i, g in enumerate(golds)]
    stats = SplitStats(_LIAR.metric, examples)
    selected, initial = _evaluation("s", selected_answers, examples), _evaluation("i", initial_answers, examples)
    consts = constant_evaluations(_LIAR, examples)
    top = best_constant(consts, "f1", "Yes")
    res = {
        "metric": "f1",
        "selected_prompt": "s",
        "initial_prompt": "i",
        "selected_test": selected.to_dict(),
        "selected_vs_initial": stats.paired(selected, initial),
        "constant_baselines": {"best": top, "by_label": {k: e.to_dict() for k, e in consts.items()}},
        "selected_vs_constant": stats.paired(selected, consts[top]),
    }
    line = headline(res)
    vs_constant, vs_initial = res["selected_vs_constant"]["f1"], res["selected_vs_initial"]["f1"]
    if "over a constant answer:" not in line:  # no "no gain ..." sentence: the constant is beaten, paired
        assert vs_constant["ci"][0] > 0 and f"it beats always answering {top!r}" in line
    else:
        assert not vs_constant["ci"][0] > 0
    if line.startswith("headline: better than the initial prompt"):
        assert vs_initial["ci"][0] > 0 and res["selected_vs_initial"]["balanced_accuracy"]["ci"][0] > 0
    if line.startswith("headline: worse than the initial prompt"):
        assert vs_initial["ci"][1] < 0
    assert "does not beat" not in line
