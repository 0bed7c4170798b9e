"""Length-aware selection: a candidate's prompt tokens as a second objective (promptolution penalises
prompt length; here it is also a Pareto front).

``LengthAware`` wraps any acceptance rule (``selection.length_objective``): the rule scores the
candidates as usual (``estimate``), then the beam is re-chosen among the scored ones with their prompt
tokens (the rendered prompt with an empty input: instruction, demonstrations and the template's fixed
text):

* ``pareto``: the non-dominated fronts of (estimate up, tokens down), first front first; a front with
  more candidates than beam slots keeps the best estimate and points spread evenly along it by length;
* ``penalty``: the top ``beam_size`` by ``estimate - length_penalty * tokens / 100``.

The beam is returned best estimate first. The round's points (id, estimate, tokens) and the first front
are recorded in the history's ``selection.length`` (the report plots them).

``selection.pick: shortest-within-ci`` (``shortest_within_ci``) makes the selected prompt the beam's
shortest whose estimate is at least the lower end of the best estimate's 95% Wilson interval (rewards
in [0, 1]: the interval of a proportion over the best candidate's pulls).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from apo_local.search.admission import prompt_tokens  # the prompt's size, as admission measures it
from apo_local.search.state import Status


def _dominates(a: tuple[float, int], b: tuple[float, int]) -> bool:
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def fronts(points: Sequence[tuple[float, int]]) -> list[list[int]]:
    """Non-dominated sorting of (score, tokens) points (higher score, fewer tokens): index lists, best first."""
    left, out = list(range(len(points))), []
    while left:
        front = [i for i in left if not any(_dominates(points[o], points[i]) for o in left if o != i)]
        out.append(front)
        left = [i for i in left if i not in front]
    return out


def spread(front: Sequence[int], points: Sequence[tuple[float, int]], k: int) -> list[int]:
    """``k`` of ``front``: the best score always, the rest evenly spaced along the front by tokens."""
    if len(front) <= k:
        return list(front)
    by_len = sorted(front, key=lambda i: (points[i][1], -points[i][0], i))
    if k == 1:
        return [max(front, key=lambda i: (points[i][0], -points[i][1], -i))]
    idx = sorted({round(j * (len(by_len) - 1) / (k - 1)) for j in range(k)})
    return [by_len[j] for j in idx]


def length_beam(points: Sequence[tuple[float, int]], k: int, objective: str, penalty: float = 0.0) -> list[int]:
    """Indices of the beam (best score first) under ``objective`` (pareto | penalty)."""
    if objective == "penalty":
        chosen = sorted(range(len(points)), key=lambda i: (-(points[i][0] - penalty * points[i][1] / 100), i))[:k]
    else:
        chosen = []
        for front in fronts(points):
            chosen += spread(front, points, k - len(chosen))
            if len(chosen) >= k:
                break
    return sorted(chosen, key=lambda i: (-points[i][0], points[i][1], i))


def wilson_lower(p: float, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval of a proportion ``p`` over ``n`` trials."""
    if n <= 0:
        return 0.0
    p = min(1.0, max(0.0, p))
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n)


def shortest_within_ci(
    estimates: Sequence[float | None], pulls: Sequence[int], tokens: Sequence[int], scale: float = 1.0
) -> int:
    """Index of the shortest prompt whose estimate is within the best one's 95% CI (ties: higher estimate).
    ``scale``: the largest per-row reward (``selectors.reward_scale``); the interval is taken on rewards divided
    by it, in [0, 1], where a mean's variance is at most p (1 - p), and scaled back."""
    scored = [i for i, e in enumerate(estimates) if e is not None]
    if not scored:
        return 0
    best = max(scored, key=lambda i: (estimates[i], -i))
    low = wilson_lower(estimates[best] / scale, pulls[best]) * scale
    ok = [i for i in scored if estimates[i] >= low]
    return min(ok, key=lambda i: (tokens[i], -estimates[i], i))


class LengthAware:
    """An acceptance rule whose beam is re-chosen with prompt tokens as a second objective."""

    def __init__(self, inner, objective: str, penalty: float = 0.0):
        self.inner, self.objective, self.penalty = inner, objective, penalty
        self.name = inner.name

    def accept(self, candidates, ctx):
        beam, selection = self.inner.accept(candidates, ctx)
        scored = [c for c in candidates if c.competing and c.estimate is not None]
        if not scored:
            return beam, selection
        tokens = prompt_tokens(ctx.task, ctx.scorer.engine, [c.text for c in scored])
        points = [(c.estimate, t) for c, t in zip(scored, tokens)]
        chosen = length_beam(points, ctx.beam_size, self.objective, self.penalty)
        selection = dict(
            selection,
            length={
                "objective": self.objective,
                **({"penalty": self.penalty} if self.objective == "penalty" else {}),
                "points": [[c.id, c.estimate, t] for c, t in zip(scored, tokens)],
                "front": [scored[i].id for i in fronts(points)[0]],
            },
        )
        return [replace(scored[i], status=Status.BEAM) for i in chosen], selection
