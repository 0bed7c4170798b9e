"""Index policies: UCB1 and UCB-E, batched."""

from __future__ import annotations

import math
from dataclasses import dataclass

from apo_local.search.selectors.base import PullTracker, SelectorBase
from apo_local.support.errors import ApoError


@dataclass
class _IndexSelector(SelectorBase):
    """Shared batching for index policies (UCB1, UCB-E).

    Round 1 (the warm-up) pulls every arm ``min(warmup, budget // n_arms)`` examples
    (``warmup`` unset: ``batch_size``; ``warmup = 0``: no warm-up round, never-pulled arms have an
    infinite index so they are pulled first, ``arms_per_round`` at a time). Each later round pulls
    the ``arms_per_round`` arms with the highest index (ties: lower arm index), ``batch_size``
    examples each. The last round is
    shrunk to spend the budget exactly: the remainder is split over those arms, the
    first ``remainder % m`` of them (by index rank) getting one extra example.
    The final top-k is by empirical mean.
    """

    arms_per_round: int = 8
    warmup: int | None = None  # examples per arm in round 1; None: batch_size; 0: no warm-up round

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive_int("arms_per_round")
        if self.warmup is not None and (
            isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0
        ):
            raise ApoError(f"selector {self.name}: warmup must be an integer >= 0, got {self.warmup!r}")

    def _index(self, t: PullTracker, i: int) -> float:
        raise NotImplementedError

    def _run(self, t, n_arms, k, rng):
        arms = list(range(n_arms))
        per_arm = self.batch_size if self.warmup is None else self.warmup
        t.spread(arms, min(per_arm * n_arms, self.budget), rng)
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

    Index: ``mean_i + c * sqrt(ln(t) / n_i)`` with ``n_i`` = examples pulled for arm ``i``.
    ``t_unit = "round"`` (the reference implementation's, and the default): ``t`` = bandit rounds
    played so far; ``t_unit = "examples"``: ``t`` = examples pulled so far over all arms, a far
    larger bonus (ln 2048 = 7.6 vs ln 8 = 2.1) that makes the policy nearly uniform.
    ``c = 1`` is the reference's default.
    """

    c: float = 1.0
    t_unit: str = "round"
    name = "ucb"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.c, (int, float)) and self.c >= 0):
            raise ApoError(f"selector ucb: c must be >= 0, got {self.c!r}")
        if self.t_unit not in ("round", "examples"):
            raise ApoError(f"selector ucb: t_unit must be round or examples, got {self.t_unit!r}")

    def _index(self, t, i):
        if t.counts[i] == 0:
            return math.inf
        played = t.rounds if self.t_unit == "round" else t.used
        return t.mean(i) + self.c * math.sqrt(math.log(max(played, 1)) / t.counts[i])


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
