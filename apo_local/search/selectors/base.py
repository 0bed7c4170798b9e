"""The shared machinery of the bandit selectors: running sums per arm (the only caller of ``pull``,
which checks the budget) and the policies every selector follows (see the package doc)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from apo_local.support.errors import ApoError

PullFn = Callable[[list[tuple[int, int]]], list[list[float]]]


def reward_scale(weights: dict[str, float] | None) -> float:
    """The largest per-row reward under class-balanced ``weights`` (``tasks.metrics.selection_weights``: a
    minority label's correct row is worth more than 1, e.g. 3.1 at 16% prevalence); 1 for plain correctness.
    The selectors' confidence bonuses (UCB, UCB-E) and the Wilson interval of ``shortest-within-ci`` assume
    rewards in [0, 1], so the caller divides by this before a selector sees them and multiplies the estimates
    back (a monotone rescaling: the ranking is unchanged, the bonus is on the rewards' real range)."""
    return max([1.0, *(weights or {}).values()])


@dataclass
class SelectionResult:
    chosen: list[int]  # k selected arms, best first
    estimates: list[float]  # mean reward per arm; nan if never pulled
    pulls: list[int]  # examples evaluated per arm
    budget_used: int  # sum(pulls) <= budget
    rounds: int  # number of pull() calls


class PullTracker:
    """Running sums per arm; the only place that calls ``pull`` (and checks the budget)."""

    def __init__(self, n_arms: int, pull: PullFn, budget: int):
        self.n_arms, self._pull, self.budget = n_arms, pull, budget
        self.sums = [0.0] * n_arms
        self.counts = [0] * n_arms
        self.rounds = 0

    @property
    def used(self) -> int:
        return sum(self.counts)

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    def mean(self, i: int) -> float:
        return self.sums[i] / self.counts[i] if self.counts[i] else math.nan

    def pull(self, requests: list[tuple[int, int]]) -> None:
        requests = [(i, n) for i, n in requests if n > 0]
        if not requests:
            return
        arms = [i for i, _ in requests]
        assert len(set(arms)) == len(arms) and all(0 <= i < self.n_arms for i in arms), requests
        assert sum(n for _, n in requests) <= self.remaining, "selector would exceed its budget"
        replies = self._pull(list(requests))
        if len(replies) != len(requests) or any(len(r) != n for r, (_, n) in zip(replies, requests)):
            raise ValueError("pull() must return one list of n rewards per (arm, n) request")
        self.rounds += 1
        for (i, n), rewards in zip(requests, replies):
            self.sums[i] += float(sum(rewards))
            self.counts[i] += n

    def spread(self, arms: list[int], amount: int, rng: random.Random) -> None:
        """Spread ``amount`` examples evenly over ``arms`` in one round (see module doc)."""
        amount = min(amount, self.remaining)
        if not arms or amount <= 0:
            return
        per = amount // len(arms)
        if per >= 1:
            self.pull([(i, per) for i in arms])
        else:
            self.pull([(i, 1) for i in sorted(rng.sample(arms, amount))])

    def ranked(self, arms: list[int] | None = None) -> list[int]:
        arms = range(self.n_arms) if arms is None else arms

        def key(i: int) -> tuple[bool, float, int]:
            m = self.mean(i)
            return (math.isnan(m), -m if not math.isnan(m) else 0.0, i)

        return sorted(arms, key=key)

    def result(self, chosen: list[int]) -> SelectionResult:
        return SelectionResult(
            chosen=list(chosen),
            estimates=[self.mean(i) for i in range(self.n_arms)],
            pulls=list(self.counts),
            budget_used=self.used,
            rounds=self.rounds,
        )


@dataclass
class SelectorBase:
    budget: int = 2048
    batch_size: int = 32
    name = "base"

    def __post_init__(self) -> None:
        self._check_positive_int("budget", "batch_size")

    def _check_positive_int(self, *names: str) -> None:
        for f in names:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ApoError(f"selector {self.name}: {f} must be a positive integer, got {v!r}")

    def select(self, n_arms: int, k: int, pull: PullFn, rng: random.Random) -> SelectionResult:
        if n_arms < 0 or k < 1:
            raise ApoError(f"selector {self.name}: need n_arms >= 0 and k >= 1, got n_arms={n_arms}, k={k}")
        t = PullTracker(n_arms, pull, self.budget)
        if n_arms == 0:
            return t.result([])
        if k >= n_arms:
            t.spread(list(range(n_arms)), self.budget, rng)
            return t.result(t.ranked())
        return t.result(self._run(t, n_arms, k, rng))

    def _run(self, t: PullTracker, n_arms: int, k: int, rng: random.Random) -> list[int]:
        raise NotImplementedError
