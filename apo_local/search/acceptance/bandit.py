"""Bandit acceptance (ProTeGi): a best-arm selector picks the beam among parents and proposals.

Rows per bandit round: ``shared`` (the default, as the reference implementation does) draws one sample per
round and scores every arm of that round on it (an arm asked for ``n`` rows gets the sample's first ``n``),
so the arms of a round are compared on the same rows (a paired comparison: the rows' difficulty cancels);
``independent`` draws a sample per arm.
"""

from __future__ import annotations

import math
from dataclasses import replace

from apo_local.config.schema import RunConfig
from apo_local.search.acceptance.rule import Rule, SelectionCost
from apo_local.search.selectors import Selector, make_selector, reward_scale
from apo_local.search.state import Status


def draw(rng, rows: list, n: int) -> list:
    return rng.sample(rows, n) if n <= len(rows) else rng.choices(rows, k=n)


class BanditAcceptance:
    name = "bandit"

    def __init__(self, selector: Selector, shared: bool = True):
        self.selector, self.shared = selector, shared

    def accept(self, candidates, ctx):
        arms = [c for c in candidates if c.competing]
        rng = ctx.streams.rng("select")
        train = ctx.selection_train
        shared = self.shared or getattr(self.selector, "shared_sample", False)  # pareto: needs one sample per round
        scale = reward_scale(getattr(ctx.scorer, "reward_weights", None))  # the selector sees rewards in [0, 1]

        def pull(requests: list[tuple[int, int]]) -> list[list[float]]:
            pairs, sizes = [], []
            common = draw(rng, train, max(n for _, n in requests)) if shared else None
            for arm, n in requests:
                sample = common[:n] if shared else draw(rng, train, n)
                pairs += [(arms[arm].text, ex) for ex in sample]
                sizes.append(n)
            ctx.trace.at("select", ctx.round)
            rewards = [r / scale for r in ctx.scorer.rewards(pairs)]
            out, pos = [], 0
            for n in sizes:
                out.append(rewards[pos : pos + n])
                pos += n
            return out

        res = self.selector.select(len(arms), ctx.beam_size, pull, rng)
        for arm, est, pulls in zip(arms, res.estimates, res.pulls):
            arm.estimate, arm.pulls = (None if math.isnan(est) else est * scale), pulls
        beam = [replace(arms[i], status=Status.BEAM) for i in res.chosen]
        sample = "shared" if shared else "independent"
        return beam, {
            "selector": self.selector.name,
            "budget_used": res.budget_used,
            "bandit_rounds": res.rounds,
            "sample": sample,
        }


def selector_params(cfg: RunConfig) -> dict:
    sel = cfg.selection
    params = dict(budget=sel.budget, batch_size=sel.batch_size)
    if sel.selector == "ucb":
        params.update(c=sel.ucb_c, t_unit=sel.ucb_t, arms_per_round=sel.arms_per_round, warmup=sel.warmup)
    elif sel.selector == "ucb-e":
        params.update(a=sel.ucb_e_a, arms_per_round=sel.arms_per_round, warmup=sel.warmup)
    return params


def _bandit_cost(size: SelectionCost) -> None:
    """The selection budget of example evaluations, in as many engine calls as the selector's bandit rounds."""
    cfg, sel = size.cfg, size.cfg.selection
    arms = size.parents + size.new
    if arms <= cfg.search.beam_size or sel.selector == "uniform":
        rounds = 1  # every arm kept: the budget is spread in one round
    elif sel.selector in ("ucb", "ucb-e"):  # the most bandit rounds any number of arms up to ``arms`` can take
        rounds = max(_index_policy_rounds(sel, n) for n in range(1, arms + 1))
    else:
        rounds = arms - cfg.search.beam_size  # successive rejects: one phase per rejected arm (halving: fewer)
    size.target.prompts += sel.budget
    size.target.calls += rounds
    size.target.input_tokens += sel.budget * size.target_in


def _index_policy_rounds(sel, arms: int) -> int:
    """Bandit rounds of UCB / UCB-E on ``arms`` arms (selectors/ucb.py): the warm-up spreads ``warmup`` examples per
    arm evenly (what does not divide is left over), then rounds of ``arms_per_round`` arms of ``batch_size``."""
    warm = sel.batch_size if sel.warmup is None else sel.warmup
    spread = min(sel.budget, arms * warm)
    rest = sel.budget - (spread if spread < arms else spread // arms * arms)
    return (1 if spread else 0) + -(-rest // (sel.batch_size * min(sel.arms_per_round, arms)))


RULE = Rule(
    "bandit",
    make=lambda cfg: BanditAcceptance(
        make_selector(cfg.selection.selector, **selector_params(cfg)), shared=cfg.selection.sample == "shared"
    ),
    knobs=frozenset(
        {"selector", "budget", "batch_size", "arms_per_round", "ucb_c", "ucb_t", "warmup", "sample", "ucb_e_a"}
    ),
    cost=_bandit_cost,
)
