"""Uniform allocation: the brute-force baseline."""

from __future__ import annotations

from dataclasses import dataclass

from apo_local.search.selectors.base import SelectorBase


@dataclass
class UniformSelector(SelectorBase):
    """Brute force: every arm gets ``budget // n_arms`` examples in a single round.

    ``batch_size`` is not used. If ``budget < n_arms``, ``budget`` arms drawn with ``rng``
    get one example each and the rest stay unpulled (``nan``).
    """

    name = "uniform"

    def _run(self, t, n_arms, k, rng):
        t.spread(list(range(n_arms)), self.budget, rng)
        return t.ranked()[:k]
