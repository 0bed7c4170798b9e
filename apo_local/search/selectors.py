"""Best-arm identification for ProTeGi beam selection.

Candidates (prompts) are arms. Pulling an arm means evaluating its prompt on ``n``
training examples, each giving a reward in [0, 1]. The engine is batched, so a
selector hands all pulls of one bandit round to ``pull`` at once::

    pull([(arm_index, n_examples), ...]) -> [[reward, ...] (n_examples long), ...]

The caller decides *which* examples (seeded); a selector only decides which arms and
how many examples each. Units everywhere are **examples**, not pulls: ``budget`` is the
total number of example evaluations, ``pulls[i]`` the examples spent on arm ``i``.

Policies shared by all selectors:

* The budget is never exceeded; ``budget_used == sum(pulls)``.
* A round never asks for the same arm twice, never asks for ``n < 1``, and an empty
  round is never sent (so ``rounds`` == number of ``pull`` calls).
* ``n_arms == 0`` gives an empty result. ``k >= n_arms`` spends the budget uniformly
  (to get estimates for the beam) and returns every arm, ranked.
* "Spread ``m`` examples evenly over arms ``A``": each arm gets ``m // len(A)``; if that
  is 0, ``m`` arms drawn with ``rng`` get one example each. The remainder is left unspent.
* Ranking is by empirical mean, ties broken by lower index; never-pulled arms have
  estimate ``nan`` and rank after every pulled arm.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import Callable, Protocol

from apo_local.errors import ApoError

PullFn = Callable[[list[tuple[int, int]]], list[list[float]]]


@dataclass
class SelectionResult:
    chosen: list[int]  # k selected arms, best first
    estimates: list[float]  # mean reward per arm; nan if never pulled
    pulls: list[int]  # examples evaluated per arm
    budget_used: int  # sum(pulls) <= budget
    rounds: int  # number of pull() calls


class Selector(Protocol):
    name: str

    def select(self, n_arms: int, k: int, pull: PullFn, rng: random.Random) -> SelectionResult: ...


class _Tracker:
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
class _Base:
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
        t = _Tracker(n_arms, pull, self.budget)
        if n_arms == 0:
            return t.result([])
        if k >= n_arms:
            t.spread(list(range(n_arms)), self.budget, rng)
            return t.result(t.ranked())
        return t.result(self._run(t, n_arms, k, rng))

    def _run(self, t: _Tracker, n_arms: int, k: int, rng: random.Random) -> list[int]:
        raise NotImplementedError


@dataclass
class UniformSelector(_Base):
    """Brute force: every arm gets ``budget // n_arms`` examples in a single round.

    ``batch_size`` is not used. If ``budget < n_arms``, ``budget`` arms drawn with ``rng``
    get one example each and the rest stay unpulled (``nan``).
    """

    name = "uniform"

    def _run(self, t, n_arms, k, rng):
        t.spread(list(range(n_arms)), self.budget, rng)
        return t.ranked()[:k]


@dataclass
class _IndexSelector(_Base):
    """Shared batching for index policies (UCB1, UCB-E).

    Round 1 pulls every arm ``min(batch_size, budget // n_arms)`` examples, so no arm is
    scored with zero pulls. Each later round pulls the ``arms_per_round`` arms with the
    highest index (ties: lower arm index), ``batch_size`` examples each. The last round is
    shrunk to spend the budget exactly: the remainder is split over those arms, the
    first ``remainder % m`` of them (by index rank) getting one extra example.
    The final top-k is by empirical mean.
    """

    arms_per_round: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive_int("arms_per_round")

    def _index(self, t: _Tracker, i: int) -> float:
        raise NotImplementedError

    def _run(self, t, n_arms, k, rng):
        arms = list(range(n_arms))
        t.spread(arms, min(self.batch_size * n_arms, self.budget), rng)
        while t.remaining > 0:
            m = min(self.arms_per_round, n_arms)
            top = sorted(arms, key=lambda i: (-self._index(t, i), i))[:m]
            if t.remaining >= m * self.batch_size:
                sizes = [self.batch_size] * m
            else:
                base, extra = divmod(t.remaining, m)
                sizes = [base + (j < extra) for j in range(m)]
            t.pull(list(zip(top, sizes)))
        return t.ranked()[:k]


@dataclass
class UCBSelector(_IndexSelector):
    """UCB1 (Auer et al. 2002), batched as in ProTeGi's UCB bandit selection.

    Index: ``mean_i + c * sqrt(ln(t) / n_i)`` with ``t`` = examples pulled so far over all
    arms and ``n_i`` = examples pulled for arm ``i`` (both in examples, so the bonus
    shrinks like the standard error of a mean of [0, 1] rewards).
    """

    c: float = 2.0
    name = "ucb"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.c, (int, float)) and self.c >= 0):
            raise ApoError(f"selector ucb: c must be >= 0, got {self.c!r}")

    def _index(self, t, i):
        if t.counts[i] == 0:
            return math.inf
        return t.mean(i) + self.c * math.sqrt(math.log(max(t.used, 1)) / t.counts[i])


@dataclass
class UCBESelector(_IndexSelector):
    """UCB-E (Audibert, Bubeck & Munos 2010): index ``mean_i + sqrt(a / n_i)``.

    ``n_i`` is in examples. The paper's tuned ``a`` is ``25/36 * (budget - K) / H1``, which
    needs the unknown gaps; the default ``a = 2.0`` gives a bonus of 0.25 after 32 examples.
    """

    a: float = 2.0
    name = "ucb-e"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.a, (int, float)) and self.a >= 0):
            raise ApoError(f"selector ucb-e: a must be >= 0, got {self.a!r}")

    def _index(self, t, i):
        if t.counts[i] == 0:
            return math.inf
        return t.mean(i) + math.sqrt(self.a / t.counts[i])


@dataclass
class SuccessiveRejectsSelector(_Base):
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
class SuccessiveHalvingSelector(_Base):
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


SELECTORS: dict[str, type[_Base]] = {
    cls.name: cls
    for cls in (UniformSelector, UCBSelector, UCBESelector, SuccessiveRejectsSelector, SuccessiveHalvingSelector)
}


def make_selector(name: str, **params) -> Selector:
    """Build a selector by name. Parameters that are ``None`` are dropped (use defaults)."""
    cls = SELECTORS.get(name)
    if cls is None:
        raise ApoError(f"unknown selector {name!r}; valid: {', '.join(SELECTORS)}")
    valid = {f.name for f in fields(cls)}
    bad = sorted(set(params) - valid)
    if bad:
        raise ApoError(f"selector {name}: unknown parameter(s) {', '.join(bad)}; valid: {', '.join(sorted(valid))}")
    return cls(**{key: v for key, v in params.items() if v is not None})
