"""Bandit acceptance (ProTeGi): a best-arm selector picks the beam among parents and proposals."""

from __future__ import annotations

import math
from dataclasses import replace

from apo_local.search.selectors import Selector
from apo_local.search.state import Status


class BanditAcceptance:
    name = "bandit"

    def __init__(self, selector: Selector):
        self.selector = selector

    def accept(self, candidates, ctx):
        arms = [c for c in candidates if c.competing]
        rng = ctx.streams.rng("select")
        train = ctx.selection_train

        def draw(n: int) -> list:
            return rng.sample(train, n) if n <= len(train) else rng.choices(train, k=n)

        shared = getattr(self.selector, "shared_sample", False)  # one sample for every arm of a round

        def pull(requests: list[tuple[int, int]]) -> list[list[float]]:
            ctx.budget.check()  # between bandit rounds: every cap holds inside the selection too
            pairs, sizes = [], []
            common = draw(max(n for _, n in requests)) if shared else []
            for arm, n in requests:
                sample = common[:n] if shared else draw(n)
                pairs += [(arms[arm].text, ex) for ex in sample]
                sizes.append(n)
            ctx.trace.at("select", ctx.round)
            rewards = ctx.scorer.rewards(pairs)
            out, pos = [], 0
            for n in sizes:
                out.append(rewards[pos: pos + n])
                pos += n
            return out

        res = self.selector.select(len(arms), ctx.beam_size, pull, rng)
        for arm, est, pulls in zip(arms, res.estimates, res.pulls):
            arm.estimate, arm.pulls = (None if math.isnan(est) else est), pulls
        beam = [replace(arms[i], status=Status.BEAM) for i in res.chosen]
        return beam, {"selector": self.selector.name, "budget_used": res.budget_used, "bandit_rounds": res.rounds}
