"""Length-aware selection (pure logic): Pareto fronts of (estimate, tokens), the penalty, the CI pick."""

from __future__ import annotations

import pytest

from apo_local.run.config import build_config, flag_names
from apo_local.search.acceptance.length import fronts, length_beam, shortest_within_ci, spread, wilson_lower
from apo_local.support.errors import ApoError

POINTS = [(0.80, 300), (0.78, 120), (0.60, 100), (0.80, 310), (0.50, 400), (0.79, 200)]


def test_fronts_are_non_dominated_layers():
    f = fronts(POINTS)
    assert f[0] == [0, 1, 2, 5]  # 3 is dominated by 0 (same score, longer); 4 by everything
    assert f[1] == [3] and f[2] == [4]
    assert sorted(i for layer in f for i in layer) == list(range(len(POINTS)))


def test_pareto_beam_takes_the_front_spread_by_length_best_first():
    assert length_beam(POINTS, 2, "pareto") == [0, 2]  # the best score and the shortest end of the front
    assert length_beam(POINTS, 4, "pareto") == [0, 5, 1, 2]
    assert length_beam(POINTS, 5, "pareto") == [0, 3, 5, 1, 2]  # the next front fills the beam
    assert spread([0, 1, 2, 5], POINTS, 1) == [0]  # one slot: the best score


def test_penalty_trades_score_for_tokens():
    assert length_beam(POINTS, 1, "penalty", 0.0) == [0]
    assert length_beam(POINTS, 1, "penalty", 0.02) == [1]  # 0.78 - 0.024 beats 0.80 - 0.06
    assert length_beam(POINTS, 1, "penalty", 1.0) == [2]


def test_shortest_within_the_ci_of_the_best():
    assert wilson_lower(1.0, 0) == 0.0
    assert 0.68 < wilson_lower(0.8, 64) < 0.69 and wilson_lower(0.8, 10_000) > 0.79
    est, tokens = [0.80, 0.74, 0.60], [300, 120, 100]
    assert shortest_within_ci(est, [64, 64, 64], tokens) == 1  # 0.74 is inside [0.686, ..]; 0.60 is not
    assert shortest_within_ci(est, [10_000] * 3, tokens) == 0  # a tight interval keeps the best
    assert shortest_within_ci([None, 0.7], [0, 8], [10, 50]) == 1  # unscored prompts are never picked
    assert shortest_within_ci([None], [0], [5]) == 0


def test_length_knobs_are_flags_and_checked():
    cfg = build_config(
        {"selection": {"length_objective": "penalty", "length_penalty": 0.02, "pick": "shortest-within-ci"}}
    )
    assert cfg.selection.length_objective == "penalty" and cfg.selection.pick == "shortest-within-ci"
    names = flag_names()
    assert names["selection.pick"] == "pick" and names["selection.length_objective"] == "length-objective"
    with pytest.raises(ApoError, match="selection.length_objective"):
        build_config({"selection": {"length_objective": "shortest"}})
    with pytest.raises(ApoError, match="selection.length_penalty"):
        build_config({"selection": {"length_penalty": -1}})
