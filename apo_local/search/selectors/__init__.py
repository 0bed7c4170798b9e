"""Best-arm identification for ProTeGi beam selection.

Candidates (prompts) are arms. Pulling an arm means evaluating its prompt on ``n``
training examples, each giving a reward in [0, 1] (class-balanced rewards are divided by
``reward_scale`` first). The engine is batched, so a
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

import random
from dataclasses import fields
from typing import Protocol

from apo_local.search.selectors.base import PullFn, SelectionResult, SelectorBase, reward_scale
from apo_local.search.selectors.pareto import ParetoSelector
from apo_local.search.selectors.successive import SuccessiveHalvingSelector, SuccessiveRejectsSelector
from apo_local.search.selectors.ucb import UCBESelector, UCBSelector
from apo_local.search.selectors.uniform import UniformSelector
from apo_local.support.errors import ApoError

__all__ = ["PullFn", "SELECTORS", "SelectionResult", "Selector", "make_selector", "reward_scale"]


class Selector(Protocol):
    name: str

    def select(self, n_arms: int, k: int, pull: PullFn, rng: random.Random) -> SelectionResult: ...


SELECTORS: dict[str, type[SelectorBase]] = {
    cls.name: cls
    for cls in (UniformSelector, UCBSelector, UCBESelector, SuccessiveRejectsSelector, SuccessiveHalvingSelector)
}
SELECTORS[ParetoSelector.name] = ParetoSelector  # GEPA-style per-example front (pareto.py)


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
