"""Elimination policies: Successive Rejects and Sequential Halving, stopped at k arms."""

from __future__ import annotations

import math
from dataclasses import dataclass

from apo_local.search.selectors.base import SelectorBase


@dataclass
class SuccessiveRejectsSelector(SelectorBase):
    """Successive Rejects (Audibert & Bubeck 2010), stopped when ``k`` arms remain.

    Phase ``p = 1 .. K-k`` brings every surviving arm to
    ``n_p = max(1, ceil((budget - K) / (logbar * (K + 1 - p))))`` cumulative examples in one
    round, then rejects the survivor with the lowest *cumulative* mean (ties: higher index).
    For top-k the normaliser is ``logbar = k/(k+1) + sum_{i=k+1..K} 1/i`` (equal to the
    paper's ``1/2 + sum_{i=2..K} 1/i`` at ``k = 1``), so the whole budget is planned for
    the ``K-k`` phases that actually run: rejected arms hold ``n_p`` examples, the ``k``
    survivors ``n_{K-k}``, and the total is at most ``budget``. ``batch_size`` is not used.
    If ``budget < K`` it falls back to the uniform policy.
    """

    name = "successive-rejects"

    def _run(self, t, n_arms, k, rng):
        K, arms = n_arms, list(range(n_arms))
        if self.budget < K:
            t.spread(arms, self.budget, rng)
            return t.ranked()[:k]
        logbar = k / (k + 1) + sum(1 / i for i in range(k + 1, K + 1))
        for p in range(1, K - k + 1):
            n_p = max(1, math.ceil((self.budget - K) / (logbar * (K + 1 - p))))
            left, reqs = t.remaining, []
            for i in arms:  # the planned schedule fits; clamping is only a guard
                need = min(max(0, n_p - t.counts[i]), left)
                reqs.append((i, need))
                left -= need
            t.pull(reqs)
            arms.remove(t.ranked(arms)[-1])
        return t.ranked(arms)


@dataclass
class SuccessiveHalvingSelector(SelectorBase):
    """Sequential Halving (Karnin, Koren & Somekh 2013), stopped at ``k`` arms.

    ``R = max(1, ceil(log2(K / k)))`` rounds. Round ``r`` spreads ``remaining // (rounds
    left)`` examples evenly over the survivors (i.e. ``budget // R`` when divisions are
    exact; leftovers roll into later rounds), then keeps the best ``max(k, ceil(n / 2))``
    survivors by *cumulative* mean. ``batch_size`` is not used.
    """

    name = "successive-halving"

    def _run(self, t, n_arms, k, rng):
        arms = list(range(n_arms))
        R = max(1, math.ceil(math.log2(n_arms / k)))
        for r in range(R):
            t.spread(arms, t.remaining // (R - r), rng)
            arms = t.ranked(arms)[: max(k, math.ceil(len(arms) / 2))]
        return t.ranked(arms)[:k]
