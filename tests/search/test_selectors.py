"""Best-arm selectors on synthetic Bernoulli arms (pure logic, seeded, fast)."""

import math
import random

import pytest

from apo_local.search.proposers import target_answer
from apo_local.search.selectors import SELECTORS, make_selector
from apo_local.support.errors import ApoError

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

NAMES = [name for name in SELECTORS if name != "pareto"]  # pareto keeps a front, not the best arms: test_pareto.py
assert NAMES == ["uniform", "ucb", "ucb-e", "successive-rejects", "successive-halving"]


def shuffled(means, seed):
    """Place the arms at seeded positions so the best arm is not index 0 (ties favour low index)."""
    perm = random.Random(seed).sample(range(len(means)), len(means))
    return [means[p] for p in perm]


# 16 arms: best 0.8, second 0.6, the other 14 spread over 0.30 .. 0.55.
BEST_ONE = shuffled([0.3 + 0.25 * i / 13 for i in range(14)] + [0.6, 0.8], seed=123)
# 16 arms: top 4 at 0.65, 0.70, 0.75, 0.80; the other 12 spread over 0.30 .. 0.55.
TOP_FOUR = shuffled([0.3 + 0.25 * i / 11 for i in range(12)] + [0.65, 0.7, 0.75, 0.8], seed=7)


class Recorder:
    """A pull function over Bernoulli arms that checks and records every round."""

    def __init__(self, means, seed):
        self.means, self.rng, self.calls = means, random.Random(seed), []

    def __call__(self, requests):
        assert requests, "empty round sent"
        arms = [i for i, _ in requests]
        assert len(set(arms)) == len(arms), f"arm repeated in one round: {requests}"
        for i, n in requests:
            assert isinstance(i, int) and 0 <= i < len(self.means), requests
            assert isinstance(n, int) and n >= 1, requests
        self.calls.append(list(requests))
        return [[float(self.rng.random() < self.means[i]) for _ in range(n)] for i, n in requests]


def check_result(res, n_arms, k, budget, rec):
    assert res.budget_used == sum(res.pulls) <= budget
    assert res.rounds == len(rec.calls)
    assert sum(n for call in rec.calls for _, n in call) == res.budget_used
    assert len(res.pulls) == len(res.estimates) == n_arms
    assert len(res.chosen) == min(k, n_arms) and len(set(res.chosen)) == len(res.chosen)
    for i in range(n_arms):
        assert math.isnan(res.estimates[i]) == (res.pulls[i] == 0)
    # a never-pulled arm is never chosen over a pulled one
    pulled = [i for i in range(n_arms) if res.pulls[i]]
    if len(pulled) >= len(res.chosen):
        assert all(res.pulls[i] for i in res.chosen)
    # best first by estimate
    est = [res.estimates[i] for i in res.chosen if res.pulls[i]]
    assert est == sorted(est, reverse=True)


@pytest.mark.parametrize("name", NAMES)
def test_finds_best_arm(name):
    """budget 2048, batch 32, gap 0.2 between best and second: best arm found in >= 90% of 50 trials."""
    best = BEST_ONE.index(0.8)
    hits = 0
    for seed in range(50):
        rec = Recorder(BEST_ONE, seed)
        res = make_selector(name, budget=2048, batch_size=32).select(16, 1, rec, random.Random(seed))
        check_result(res, 16, 1, 2048, rec)
        hits += res.chosen[0] == best
    assert hits >= 45, f"{name}: {hits}/50"


@pytest.mark.parametrize("name", NAMES)
def test_recovers_top_k(name):
    """k=4, budget 2048: on average at least 3 of the true top 4 are chosen."""
    top = set(sorted(range(16), key=lambda i: -TOP_FOUR[i])[:4])
    overlap = 0
    for seed in range(30):
        rec = Recorder(TOP_FOUR, 1000 + seed)
        res = make_selector(name).select(16, 4, rec, random.Random(seed))
        check_result(res, 16, 4, 2048, rec)
        overlap += len(top & set(res.chosen))
    assert overlap / 30 >= 3


def run_combo(name, n_arms, k, budget, batch_size, seed):
    rec = Recorder([random.Random(seed + i).random() for i in range(n_arms)], seed)
    res = make_selector(name, budget=budget, batch_size=batch_size).select(n_arms, k, rec, random.Random(seed))
    check_result(res, n_arms, k, budget, rec)
    return res


if given is not None:

    @settings(max_examples=300, deadline=None)
    @given(
        name=st.sampled_from(NAMES),
        n_arms=st.integers(0, 40),
        k=st.integers(1, 45),
        budget=st.integers(1, 3000),
        batch_size=st.integers(1, 100),
        seed=st.integers(0, 2**16),
    )
    def test_budget_never_exceeded(name, n_arms, k, budget, batch_size, seed):
        run_combo(name, n_arms, k, budget, batch_size, seed)

else:  # pragma: no cover

    def test_budget_never_exceeded():
        r = random.Random(0)
        for seed in range(1500):
            run_combo(r.choice(NAMES), r.randint(0, 40), r.randint(1, 45), r.randint(1, 3000), r.randint(1, 100), seed)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_arms,k,budget", [(5, 1, 3), (5, 2, 5), (16, 1, 16), (16, 4, 17), (3, 1, 1), (2, 1, 2048)])
def test_tiny_and_edge_budgets(name, n_arms, k, budget):
    res = run_combo(name, n_arms, k, budget, 32, seed=1)
    assert res.budget_used <= budget


@pytest.mark.parametrize("name", NAMES)
def test_degenerate_shapes(name):
    res = run_combo(name, 0, 3, 100, 8, seed=0)
    assert res.chosen == [] and res.rounds == 0 and res.budget_used == 0
    # k >= n_arms: every arm returned (ranked), budget spread uniformly in one round
    res = run_combo(name, 3, 5, 300, 8, seed=0)
    assert sorted(res.chosen) == [0, 1, 2] and res.pulls == [100, 100, 100] and res.rounds == 1
    with pytest.raises(ApoError):
        make_selector(name).select(3, 0, lambda r: [], random.Random(0))


@pytest.mark.parametrize("name", ["ucb", "ucb-e"])
def test_index_policies_pull_every_arm_first(name):
    rec = Recorder(BEST_ONE, 0)
    res = make_selector(name, budget=2048, batch_size=32, arms_per_round=8).select(16, 1, rec, random.Random(0))
    first = rec.calls[0]
    assert sorted(i for i, _ in first) == list(range(16)) and {n for _, n in first} == {32}
    for call in rec.calls[1:]:
        assert len(call) <= 8
    assert res.budget_used == 2048  # 512 + 6 rounds of 8 x 32
    assert res.rounds == 7


def test_index_policy_last_round_is_shrunk_to_fit():
    rec = Recorder(BEST_ONE, 0)
    res = make_selector("ucb", budget=16 * 32 + 100, batch_size=32, arms_per_round=8).select(
        16, 1, rec, random.Random(0)
    )
    assert res.budget_used == 612 and res.rounds == 2
    assert sorted(n for _, n in rec.calls[1]) == [12] * 4 + [13] * 4


def test_ucb_stops_pulling_arms_that_always_fail():
    """Arms 0 and 1 always pay 1 and 0.7, the other 14 always 0; two arms per round. With the reference's
    constants (c = 1, t = bandit rounds) the bonus after the warm-up (at most sqrt(ln 30 / 32) = 0.33) stays
    below the gap, so every later round goes to arms 0 and 1 and the always-0 arms are never pulled again.
    t counted in examples with c = 2 (the earlier default) kept spending the budget on them."""
    pull, _ = scripted([[1.0, 0.7] + [0.0] * 14])
    res = make_selector("ucb", arms_per_round=2).select(16, 1, pull, random.Random(0))
    assert res.chosen == [0] and res.pulls == [800, 800] + [32] * 14
    pull, _ = scripted([[1.0, 0.7] + [0.0] * 14])
    old = make_selector("ucb", c=2.0, t_unit="examples", arms_per_round=2).select(16, 1, pull, random.Random(0))
    assert sum(old.pulls[2:]) > 14 * 32  # the near-uniform spending the reference's constants avoid


def test_ucb_t_counts_bandit_rounds():
    """The index's t is the number of bandit rounds played, not examples: after the warm-up round (t = 1,
    ln 1 = 0) the next round is greedy on the means."""
    pull, calls = scripted([[0.5, 0.6, 0.4, 0.55], [0.0] * 4])
    make_selector("ucb", budget=4 * 8 + 2 * 8, batch_size=8, arms_per_round=2).select(4, 1, pull, random.Random(0))
    assert sorted(i for i, _ in calls[1]) == [1, 3]  # the two best means, no exploration bonus at t = 1
    sel = make_selector("ucb")
    assert (sel.c, sel.t_unit) == (1.0, "round")


@pytest.mark.parametrize("warmup,first", [(None, 32), (4, 4), (0, None)])
def test_ucb_warmup_is_a_knob(warmup, first):
    rec = Recorder(BEST_ONE, 0)
    res = make_selector("ucb", warmup=warmup, arms_per_round=8).select(16, 1, rec, random.Random(0))
    if first is None:  # no warm-up round: never-pulled arms (infinite index) go first, 8 at a time
        assert len(rec.calls[0]) == 8 and {n for _, n in rec.calls[0]} == {32}
    else:
        assert len(rec.calls[0]) == 16 and {n for _, n in rec.calls[0]} == {first}
    assert res.budget_used == 2048
    with pytest.raises(ApoError, match="warmup"):
        make_selector("ucb", warmup=-1)


def scripted(values_by_round):
    """Deterministic pull: arm i in round r returns values_by_round[r][i] for every example."""
    calls = []

    def pull(requests):
        r = len(calls)
        calls.append(requests)
        return [[values_by_round[min(r, len(values_by_round) - 1)][i]] * n for i, n in requests]

    return pull, calls


def test_successive_rejects_uses_cumulative_means():
    # budget 100, K=3, k=1: logbar = 1/2 + 1/2 + 1/3; n_1 = ceil(97 / (4/3 * 3)) = 25, n_2 = ceil(97 / (4/3 * 2)) = 37.
    # Phase 1: arm 0 = 1.0, arm 1 = 0.6, arm 2 = 0.0 -> arm 2 rejected.
    # Phase 2 (12 more each): arm 0 = 0.0, arm 1 = 0.5. Phase means would pick arm 1;
    # cumulative means are 25/37 = 0.68 for arm 0 vs (15 + 6)/37 = 0.57 for arm 1 -> arm 0.
    pull, calls = scripted([[1.0, 0.6, 0.0], [0.0, 0.5, 0.0]])
    res = make_selector("successive-rejects", budget=100).select(3, 1, pull, random.Random(0))
    assert calls == [[(0, 25), (1, 25), (2, 25)], [(0, 12), (1, 12)]]
    assert res.chosen == [0] and res.pulls == [37, 37, 25] and res.budget_used == 99 <= 100
    assert res.estimates[0] == pytest.approx(25 / 37)


def test_successive_rejects_schedule_k1_matches_paper():
    K, budget = 16, 2048
    logbar = 0.5 + sum(1 / i for i in range(2, K + 1))
    rec = Recorder(BEST_ONE, 0)
    res = make_selector("successive-rejects", budget=budget).select(K, 1, rec, random.Random(0))
    assert res.rounds == K - 1
    expected = [math.ceil((budget - K) / (logbar * (K + 1 - p))) for p in range(1, K)]
    assert sorted(res.pulls) == sorted(expected + [expected[-1]])
    assert [len(c) for c in rec.calls] == list(range(K, 1, -1))


@pytest.mark.parametrize(
    "n_arms,k,sizes", [(16, 1, [16, 8, 4, 2]), (16, 4, [16, 8]), (10, 3, [10, 5]), (5, 1, [5, 3, 2])]
)
def test_successive_halving_keeps_ceil_half(n_arms, k, sizes):
    rec = Recorder([i / n_arms for i in range(n_arms)], 0)
    res = make_selector("successive-halving", budget=4096).select(n_arms, k, rec, random.Random(0))
    assert [len(c) for c in rec.calls] == sizes
    for prev, nxt in zip(rec.calls, rec.calls[1:]):  # survivors are the best half so far
        assert len(nxt) == max(k, math.ceil(len(prev) / 2))
    assert len(res.chosen) == k and res.budget_used <= 4096


def test_successive_halving_uses_cumulative_means():
    # budget 512, K=4, k=1 -> 2 rounds: 64 examples x 4 arms, then 128 x 2 survivors.
    # Round 1: arm0=1.0, arm1=0.5, arms 2,3=0 -> keep 0, 1. Round 2: arm0=0.5, arm1=0.6.
    # Round-2 means would pick arm 1; cumulative: arm0 = 128/192 = 0.67 > arm1 = 108.8/192 = 0.57.
    pull, calls = scripted([[1.0, 0.5, 0.0, 0.0], [0.5, 0.6, 0.0, 0.0]])
    res = make_selector("successive-halving", budget=512).select(4, 1, pull, random.Random(0))
    assert calls == [[(0, 64), (1, 64), (2, 64), (3, 64)], [(0, 128), (1, 128)]]
    assert res.chosen == [0] and res.budget_used == 512


def test_uniform_policy():
    rec = Recorder([0.5] * 7, 0)
    res = make_selector("uniform", budget=100).select(7, 2, rec, random.Random(0))
    assert res.pulls == [14] * 7 and res.rounds == 1 and res.budget_used == 98
    rec = Recorder([0.5] * 7, 0)
    res = make_selector("uniform", budget=4).select(7, 2, rec, random.Random(0))
    assert sorted(res.pulls) == [0, 0, 0, 1, 1, 1, 1] and res.rounds == 1
    assert all(res.pulls[i] for i in res.chosen)


def test_ties_broken_by_lower_index():
    pull, _ = scripted([[0.5, 0.7, 0.7, 0.5]])
    assert make_selector("uniform", budget=40).select(4, 2, pull, random.Random(0)).chosen == [1, 2]


def test_make_selector_errors():
    with pytest.raises(ApoError, match="valid: uniform, ucb, ucb-e, successive-rejects, successive-halving"):
        make_selector("thompson")
    for bad in ({"budget": 0}, {"budget": -5}, {"batch_size": 0}, {"budget": 1.5}):
        with pytest.raises(ApoError):
            make_selector("ucb", **bad)
    with pytest.raises(ApoError, match="unknown parameter"):
        make_selector("uniform", c=2.0)
    with pytest.raises(ApoError):
        make_selector("ucb", c=-1)
    with pytest.raises(ApoError):
        make_selector("ucb-e", arms_per_round=0)
    s = make_selector("ucb", budget=None, c=None)  # None means "use the default"
    assert (s.budget, s.batch_size, s.c, s.arms_per_round, s.name) == (2048, 32, 1.0, 8, "ucb")
    assert make_selector("ucb-e").a == 2.0
    for name in NAMES:
        assert make_selector(name).name == name
    assert "\n" not in str(pytest.raises(ApoError, make_selector, "x").value)


def test_liar_protegi_config_has_the_reference_hyperparameters():
    """configs/liar-protegi.yaml against microsoft/LMOps prompt_optimization (main.py defaults, --evaluator ucb)."""
    from pathlib import Path

    from apo_local.run.config import load_config
    from apo_local.search.acceptance import selector_params

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "liar-protegi.yaml", {})
    s, p, sel = cfg.search, cfg.protegi, cfg.selection
    assert (s.rounds, s.beam_size, s.minibatch_size, s.max_expansion) == (6, 4, 64, 8)
    assert (p.n_gradients, p.errors_per_gradient, p.reasons_per_gradient, p.edits_per_gradient, p.mc_samples) == (
        4,
        4,
        1,
        1,
        2,
    )
    assert (sel.selector, sel.budget, sel.batch_size, sel.arms_per_round) == ("ucb", 32 * 8 * 8, 32, 8)
    assert (sel.ucb_c, sel.ucb_t, sel.sample) == (1.0, "round", "shared")
    assert cfg.evaluation.test_limit == 400
    ucb = make_selector("ucb", **selector_params(cfg))
    assert (ucb.c, ucb.t_unit, ucb.warmup) == (1.0, "round", 32)
    # configs/liar-protegi-reference.yaml: the same, predicting and choosing as the reference does
    # (predictors.BinaryPredictor: 4 generated tokens, Yes only if the reply starts with YES; accuracy rewards;
    # no validation split, the final beam's first prompt)
    ref = load_config(Path(__file__).resolve().parents[2] / "configs" / "liar-protegi-reference.yaml", {})
    assert (ref.search, ref.protegi, ref.evaluation.test_limit) == (
        s.model_copy(update={"hygiene": "off"}),
        p,
        400,
    )  # the reference has no candidate hygiene
    assert ref.selection.model_copy(update={"reward": "metric", "final_pick": "method"}) == sel
    assert (ref.scoring.mode, ref.scoring.max_tokens, ref.scoring.parse) == ("generate", 4, "positive-prefix")
    assert (ref.selection.reward, ref.selection.final_pick, ref.evaluation.validation_split) == (
        "accuracy",
        "reference",
        "none",
    )
    assert target_answer(ref) == ("generate", 4, "positive-prefix")


def test_class_balanced_rewards_reach_the_bandit_in_0_1_and_the_estimates_come_back_balanced():
    """16% positives: a right 'Yes' row is worth 3.125 as a reward. The selector (its UCB bonus assumes [0, 1])
    sees every reward divided by 3.125; the arms' estimates are balanced accuracy again."""
    from types import SimpleNamespace

    from apo_local.search.acceptance.bandit import BanditAcceptance
    from apo_local.search.selectors import make_selector, reward_scale
    from apo_local.search.state import Candidate
    from apo_local.search.streams import Streams
    from apo_local.tasks import Example
    from apo_local.tasks.metrics import selection_weights

    rows = [Example(f"y{i}", "x", "Yes") for i in range(16)] + [Example(f"n{i}", "x", "No") for i in range(84)]
    weights = selection_weights("f1", [ex.label for ex in rows])
    assert reward_scale(weights) == pytest.approx(3.125) and reward_scale(None) == 1.0
    seen, scored = [], []

    class Scorer:
        reward_weights = weights

        def rewards(self, pairs):  # every row right: each row's reward is its label's weight
            scored.extend(ex for _, ex in pairs)
            return [weights[ex.label] for _, ex in pairs]

    class Recording:
        name = "recording"

        def select(self, n_arms, k, pull, rng):
            got = pull([(i, 50) for i in range(n_arms)])
            seen.extend(r for arm in got for r in arm)
            return make_selector("uniform", budget=100).select(n_arms, k, lambda req: got, rng)

    ctx = SimpleNamespace(
        streams=Streams(0, 1),
        selection_train=rows,
        budget=SimpleNamespace(check=lambda: None),
        trace=SimpleNamespace(at=lambda *a: None),
        scorer=Scorer(),
        beam_size=1,
        round=1,
    )
    arms = [Candidate("a", 1, "edit"), Candidate("b", 1, "edit")]
    BanditAcceptance(Recording()).accept(arms, ctx)
    assert max(seen) == pytest.approx(1.0) and min(seen) == pytest.approx(weights["No"] / 3.125)
    raw_mean = sum(weights[ex.label] for ex in scored[:50]) / 50  # the shared sample's rewards, unscaled
    assert raw_mean > 1.0 or raw_mean < 1.0  # a sample of 50 of 100 rows: not exactly balanced
    assert [arm.estimate for arm in arms] == pytest.approx([raw_mean, raw_mean])


def test_shortest_within_ci_takes_the_wilson_interval_on_the_rescaled_reward():
    from apo_local.search.acceptance.length import shortest_within_ci, wilson_lower

    # class-balanced rewards reach 3.125: a mean of 32 of them varies far more than a proportion, so the interval
    # taken as if the rewards were in [0, 1] is too narrow (it excludes a prompt the data cannot tell apart)
    estimates, pulls, tokens = [0.95, 0.7], [32, 32], [40, 10]
    assert wilson_lower(0.95, 32) > 0.7 > wilson_lower(0.95 / 3.125, 32) * 3.125
    assert shortest_within_ci(estimates, pulls, tokens) == 0
    assert shortest_within_ci(estimates, pulls, tokens, scale=3.125) == 1
