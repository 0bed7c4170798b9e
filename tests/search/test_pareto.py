"""The Pareto parent selector (GEPA-style per-example front; pure logic, seeded, no engine)."""

from __future__ import annotations

import random

import pytest

from apo_local.search.selectors import SELECTORS, make_selector
from apo_local.search.selectors.pareto import example_wins, pareto_front, pareto_parents
from apo_local.support.errors import ApoError
from tests.search.test_selectors import Recorder, check_result

ROWS = [
    [1, 1, 0, 0, 0, 0],  # A: mean 0.33, alone best on nothing... shares examples 0, 1
    [1, 1, 1, 1, 0, 0],  # B: mean 0.67, dominates A
    [0, 0, 0, 0, 1, 0],  # C: mean 0.17, the only one right on example 4
    [1, 1, 1, 0, 0, 0],  # D: dominated by B
    [0, 0, 0, 0, 0, 0],  # E: nothing
]


def test_wins_fronts_and_domination():
    assert example_wins(ROWS) == [2, 4, 1, 3, 0]  # example 5: nobody right, skipped
    assert pareto_front(ROWS) == [1, 2]  # C stays for its one example although its mean is the lowest


def test_parents_come_from_the_front_weighted_then_topped_up_by_mean():
    assert sorted(pareto_parents(ROWS, 2, random.Random(0))) == [1, 2]
    assert pareto_parents(ROWS, 3, random.Random(0)) == [1, 3, 2]  # front + the best mean left, best mean first
    picks = [pareto_parents(ROWS, 1, random.Random(s))[0] for s in range(400)]
    assert 0.7 < picks.count(1) / 400 < 0.9  # weights 4 : 1 (examples won)
    assert pareto_parents(ROWS, 1, random.Random(3)) == pareto_parents(ROWS, 1, random.Random(3))


def test_one_round_same_examples_for_every_arm_and_the_selector_contract():
    assert "pareto" in SELECTORS and getattr(SELECTORS["pareto"], "shared_sample", False)
    rec = Recorder([0.2, 0.5, 0.7, 0.4], seed=0)
    res = make_selector("pareto", budget=40).select(4, 2, rec, random.Random(0))
    check_result(res, 4, 2, 40, rec)
    assert res.rounds == 1 and res.pulls == [10, 10, 10, 10]
    for n_arms, k, budget in [(0, 1, 10), (3, 5, 30), (5, 2, 3), (16, 4, 17), (2, 1, 2048)]:
        rec = Recorder([0.5] * n_arms, seed=1)
        check_result(
            make_selector("pareto", budget=budget).select(n_arms, k, rec, random.Random(1)), n_arms, k, budget, rec
        )


def test_a_specialist_survives_where_the_best_mean_does_not_keep_it():
    # arm 2 is right only where nobody else is: by mean it is last, on the front it is kept
    rows = {0: [1.0] * 6 + [0.0] * 2, 1: [1.0] * 5 + [0.0] * 3, 2: [0.0] * 6 + [1.0, 1.0]}

    def pull(requests):
        return [rows[i][:n] for i, n in requests]

    for name, kept in (("pareto", True), ("uniform", False)):
        res = make_selector(name, budget=24).select(3, 2, pull, random.Random(0))
        assert (2 in res.chosen) is kept, name
    with pytest.raises(ApoError, match="selector pareto: unknown parameter"):
        make_selector("pareto", c=1.0)
