"""Bandit acceptance (ProTeGi): a best-arm selector picks the beam among parents and proposals.

Rows per bandit round: ``shared`` (the default, as the reference implementation does) draws one sample per
round and scores every arm of that round on it (an arm asked for ``n`` rows gets the sample's first ``n``),
so the arms of a round are compared on the same rows (a paired comparison: the rows' difficulty cancels);
``independent`` draws a sample per arm.
"""

from __future__ import annotations

import math
from dataclasses import replace

from apo_local.search.selectors import Selector, reward_scale
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
            ctx.budget.check()  # between bandit rounds: every cap holds inside the selection too
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
