"""Pareto parent selection (GEPA; Agrawal et al., 2025): keep the candidates that are best on at least one
example, not only the best on average.

One bandit round scores every arm on the **same** examples (``shared_sample``: the caller draws one
sample for the round): ``budget // n_arms`` each. Per example, the arms with the highest reward form
that example's front (an example no arm gets right tells nothing and is skipped). The arms on some
example's front, less those dominated by another arm on every example, are the Pareto front; ``k``
of them are drawn (seeded, without replacement) with weight = the number of examples they are best
on, as GEPA draws its parents; a front smaller than ``k`` is topped up by the mean. The chosen arms
are returned best mean first. ``batch_size`` is not used. With ``budget < n_arms`` (no shared sample
for every arm) it falls back to the uniform policy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from apo_local.search.selectors.base import PullFn, PullTracker, SelectionResult, SelectorBase
from apo_local.support.errors import ApoError


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def example_wins(rows: Sequence[Sequence[float]]) -> list[int]:
    """Per arm: on how many examples it has the highest reward (examples whose best reward is 0 skipped)."""
    wins = [0] * len(rows)
    for j in range(len(rows[0]) if rows else 0):
        best = max(r[j] for r in rows)
        if best > 0:
            for i, r in enumerate(rows):
                wins[i] += r[j] == best
    return wins


def pareto_front(rows: Sequence[Sequence[float]]) -> list[int]:
    """Arms best on some example and dominated by no other arm (per-example rewards ``rows[arm][example]``)."""
    wins = example_wins(rows)
    return [
        i
        for i in range(len(rows))
        if wins[i] > 0 and not any(dominates(rows[o], rows[i]) for o in range(len(rows)) if o != i)
    ]


def pareto_parents(rows: Sequence[Sequence[float]], k: int, rng: random.Random) -> list[int]:
    """``k`` arms: a draw from the front weighted by example wins, topped up by mean; best mean first."""
    wins, front = example_wins(rows), pareto_front(rows)
    mean = [sum(r) / len(r) if r else 0.0 for r in rows]
    chosen: list[int] = []
    left = list(front)
    while left and len(chosen) < k:
        pick = rng.choices(left, weights=[wins[i] for i in left])[0]
        chosen.append(pick)
        left.remove(pick)
    rest = sorted((i for i in range(len(rows)) if i not in chosen), key=lambda i: (-mean[i], i))
    chosen += rest[: k - len(chosen)]
    return sorted(chosen, key=lambda i: (-mean[i], i))


@dataclass
class ParetoSelector(SelectorBase):
    name = "pareto"
    shared_sample = True  # every arm of a round is scored on the same examples (read by the bandit acceptance)

    def select(self, n_arms: int, k: int, pull: PullFn, rng: random.Random) -> SelectionResult:
        if n_arms < 0 or k < 1:
            raise ApoError(f"selector {self.name}: need n_arms >= 0 and k >= 1, got n_arms={n_arms}, k={k}")
        rows: list[list[float]] = [[] for _ in range(n_arms)]

        def recording(requests):
            replies = pull(requests)
            for (i, _), rewards in zip(requests, replies):
                rows[i].extend(float(r) for r in rewards)
            return replies

        t = PullTracker(n_arms, recording, self.budget)
        if n_arms == 0:
            return t.result([])
        t.spread(list(range(n_arms)), self.budget, rng)
        if k >= n_arms:
            return t.result(t.ranked())
        if not rows[0] or any(len(r) != len(rows[0]) for r in rows):
            return t.result(t.ranked()[:k])
        return t.result(pareto_parents(rows, k, rng))
