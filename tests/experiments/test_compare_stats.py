"""The verdict across seeds holds its level: simulations under the null (seeded, fast) and with a real effect;
McNemar per seed and power from distinct rows; the t-based seeds/rows-needed figures."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from apo_local.experiments.compare_stats import needed, paired, score_ci, verdict, verdict_line
from apo_local.stats import seeds_needed, t_critical, t_interval
from apo_local.tasks.metrics import get_metric

ACC = get_metric("accuracy")


def _rows(correct) -> dict:
    """Row id -> (parsed, gold), gold always 'Yes'."""
    return {str(i): ("Yes" if c else "No", "Yes") for i, c in enumerate(correct)}


def _seed(p: float, n: int, rng: np.random.Generator) -> dict:
    return _rows(rng.random(n) < p)


def test_t_quantiles_match_the_table_beyond_df_10():
    table = {1: 12.706, 2: 4.303, 4: 2.776, 10: 2.228, 11: 2.201, 20: 2.086, 30: 2.042, 120: 1.980}
    for df, want in table.items():
        assert t_critical(df) == pytest.approx(want, abs=1e-3)
    assert t_critical(2, 0.6) == pytest.approx(1.061, abs=1e-3)  # the 80th percentile (a power term)
    ci = t_interval([0.1, 0.2, 0.15])["ci"]
    assert ci == pytest.approx([0.15 - 4.303 * 0.05 / 3**0.5, 0.15 + 4.303 * 0.05 / 3**0.5], abs=1e-3)


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_seed_level_gate_holds_its_level_under_the_null(seeds):
    """Each seed's search picks prompts of random quality for both sides (the same distribution): the t
    interval over the per-seed differences excludes zero in 5% of comparisons (the earlier bootstrap over
    seeds: 15% at 3 seeds, 10.5% at 5)."""
    rng = np.random.default_rng(7 + seeds)
    sims, n = 10000, 60
    p_m, p_b = rng.uniform(0.5, 0.7, (sims, seeds)), rng.uniform(0.5, 0.7, (sims, seeds))
    d = rng.binomial(n, p_m) / n - rng.binomial(n, p_b) / n
    rate = np.mean([(lambda ci: ci[0] > 0 or ci[1] < 0)(t_interval(row)["ci"]) for row in d])
    mc = math.sqrt(0.05 * 0.95 / sims)
    assert abs(rate - 0.05) < 3 * mc, rate


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_verdict_says_better_or_worse_at_most_5_percent_under_the_null(seeds):
    """The whole verdict (t over seeds and the rows' bootstrap, from prediction rows) under the null."""
    rng = np.random.default_rng(100 + seeds)
    sims, called = 250, 0
    for _ in range(sims):
        method = [_seed(rng.uniform(0.5, 0.7), 40, rng) for _ in range(seeds)]
        base = [_seed(rng.uniform(0.5, 0.7), 40, rng) for _ in range(seeds)]
        called += verdict(paired(ACC, method, base, resamples=200)) in ("better", "worse")
    mc = math.sqrt(0.05 * 0.95 / sims)
    assert called / sims <= 0.05 + 2 * mc, called / sims


def test_a_real_effect_is_called_better_and_its_mirror_worse():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(20):
        quality = rng.uniform(0.45, 0.6, 3)
        method = [_seed(q + 0.15, 200, rng) for q in quality]
        base = [_seed(q, 200, rng) for q in quality]
        vs = paired(ACC, method, base, resamples=300)
        hits += verdict(vs) == "better"
    assert hits >= 18
    assert verdict(paired(ACC, base, method, resamples=300)) == "worse"


def test_a_consistent_difference_on_too_few_rows_is_not_a_change():
    """Every seed selects the same two prompts (no spread between seeds: the t interval has width zero), 3 of
    20 rows apart: the rows' bootstrap, not the seeds, decides."""
    a, b = _rows([1] * 13 + [0] * 7), _rows([1] * 10 + [0] * 10)
    vs = paired(ACC, [a] * 3, [b] * 3)
    assert vs["seed_ci"] == pytest.approx([0.15, 0.15]) and vs["rows_ci"][0] <= 0 < vs["rows_ci"][1]
    assert verdict(vs) == "no detectable change"
    assert "every seed shows the same difference, so more seeds would not help" in needed(vs)


def test_one_seed_is_not_established_and_two_seeds_say_why_they_cannot_tell():
    strong = _rows([1] * 90 + [0] * 10), _rows([1] * 50 + [0] * 50)
    one = paired(ACC, [strong[0]], [strong[1]])
    assert verdict(one) == "not established" and one["rows_ci"][0] > 0
    line = verdict_line("mc", "protegi", one, "accuracy")
    assert "one seed compares two prompts, not two methods" in line and "run 3 or more seeds" in line
    rng = np.random.default_rng(1)
    two = paired(ACC, [_seed(0.62, 100, rng), _seed(0.55, 100, rng)], [_seed(0.55, 100, rng), _seed(0.58, 100, rng)])
    assert verdict(two) == "no detectable change"
    assert "with 2 seeds the interval over seeds is ±12.7 standard errors" in verdict_line("a", "b", two, "accuracy")
    assert verdict(None) == "no data" and verdict_line("mc", "protegi", None, "accuracy").endswith(
        "no paired test rows"
    )


def test_mcnemar_is_per_seed_and_power_counts_distinct_rows():
    """Three seeds on the same 100 test rows: one McNemar per seed's pair of prompts, and the power line speaks
    of 100 rows (a pair of prompts), not 300."""
    a, b = _rows([1] * 70 + [0] * 30), _rows([1] * 60 + [0] * 40)
    vs = paired(ACC, [a, a, b], [b, b, b])
    assert [t["only_method"] for t in vs["mcnemar"]] == [10, 10, 0]
    assert vs["mcnemar"][0]["p"] == pytest.approx(0.001953125) and vs["mcnemar"][2]["p"] == 1.0
    assert vs["examples"] == 100 and vs["rows_per_seed"] == 100
    assert vs["power"]["discordant"] == pytest.approx(0.2 / 3, abs=1e-4)


def test_needed_says_more_seeds_when_the_spread_between_seeds_dominates():
    rng = np.random.default_rng(5)
    # the per-seed differences swing by +-0.2 between seeds on 400 rows each: rows cannot fix it
    method = [_seed(p, 400, rng) for p in (0.8, 0.45, 0.75)]
    base = [_seed(0.6, 400, rng) for _ in range(3)]
    vs = paired(ACC, method, base, resamples=300)
    assert verdict(vs) == "no detectable change"
    text = needed(vs)
    assert "more seeds, not more rows" in text
    assert f"about {seeds_needed(abs(vs['diff']), np.std(vs['per_seed'], ddof=1))} seeds at 400 test rows each" in text


def test_needed_asks_for_rows_when_the_noise_within_a_seed_dominates():
    """Four seeds, 40 rows each, half of them discordant: the per-seed differences (+0.05, +0.075, +0.05,
    +0.025) barely spread, while a seed's rows alone swing its difference by about +-0.11."""
    method, base = [], []
    for extra in (2, 3, 2, 1):  # rows only the method gets right minus rows only the baseline gets right
        only_m, only_b = 10 + extra, 10
        method.append(_rows([1] * only_m + [0] * only_b + [1] * 5 + [0] * (25 - only_m)))
        base.append(_rows([0] * only_m + [1] * only_b + [1] * 5 + [0] * (25 - only_m)))
    vs = paired(ACC, method, base, resamples=400)
    assert vs["per_seed"] == pytest.approx([0.05, 0.075, 0.05, 0.025])
    assert verdict(vs) == "no detectable change" and vs["within_seed_sd"] > 0.09
    assert "test rows per seed at 4 seeds (the rows' noise dominates" in needed(vs)


def test_seeds_needed_is_t_based():
    # z would say ceil((1.96 + 0.84) ** 2) = 8; with t: n = 9 needs (2.306 + 0.889)^2 = 10.2 > 9, n = 10 has 9.9
    assert seeds_needed(1.0, 1.0) == 10
    assert seeds_needed(0.1, 0.0) == 2 and seeds_needed(0.1, math.nan) is None


def test_score_interval_over_seeds_is_t_widened_to_the_rows():
    rng = random.Random(3)
    base = [{str(i): ("No" if rng.random() < 0.4 else "Yes", "Yes") for i in range(150)} for _ in range(3)]
    lo, hi = score_ci(ACC, base)
    scores = [sum(p == "Yes" for p, _ in b.values()) / 150 for b in base]
    t = t_interval(scores)["ci"]
    assert lo <= t[0] and hi >= t[1] and lo < 0.6 < hi
    same = score_ci(ACC, [base[0]] * 3)  # no spread between seeds: the rows' bootstrap still has width
    assert same[1] - same[0] > 0.1


def test_the_sweep_groups_t_interval_uses_the_right_quantile_beyond_10_seeds():
    from apo_local.experiments.sweep.tables import aggregate

    scores = [0.5 + 0.01 * k for k in range(12)]  # 12 seeds: df 11, t = 2.201 (the earlier table fell to 1.96)
    rows = [
        {
            "kind": "cell",
            "cell": f"c{k}",
            "status": "done",
            "n": 1,
            "task": "liar",
            "seed": k,
            "metric": "f1",
            "test_selected": v,
        }
        for k, v in enumerate(scores)
    ]
    mean = aggregate(rows)[0]
    half = 2.201 * np.std(scores, ddof=1) / 12**0.5
    assert mean["test_selected_ci"] == f"[{np.mean(scores) - half:.3f}, {np.mean(scores) + half:.3f}]"
