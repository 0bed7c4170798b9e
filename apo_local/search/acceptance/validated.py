"""Validated acceptance (Melcer et al., 2025): per parent, ``validation_k`` of its updates (a seeded pick from
``pool.updates``, the pool naive acceptance chooses from: never a paraphrase) and the parent are scored on
the first ``validation_size`` of the run's validation rows (``ctx.validation``: the task's ``validation``
split, or training rows held out from everything the proposers and the feedback see; ``search/splits.py``),
one engine batch for the whole beam; the parent is replaced by its best update only if that update's score
is strictly higher. The beam keeps one slot per parent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from apo_local.search.acceptance.pool import updates
from apo_local.search.acceptance.rule import Rule, SelectionCost
from apo_local.search.state import Candidate, Status


def roots(candidates: Sequence[Candidate]) -> dict[str, str]:
    """Candidate id -> id of the beam parent ("kept") it descends from (through edit -> paraphrase chains)."""
    parent_of = {c.id: c.parent for c in candidates}
    kept = {c.id for c in candidates if c.status == Status.KEPT}
    out = {}
    for c in candidates:
        node, seen = c.id, set()
        while node not in kept and node is not None and node not in seen:
            seen.add(node)
            node = parent_of.get(node)
        if node in kept:
            out[c.id] = node
    return out


def validated_choice(parent_score: float, proposal_scores: Sequence[float]) -> int | None:
    """Index of the best proposal (earliest on ties) if it strictly beats the parent, else None."""
    if not proposal_scores:
        return None
    best = max(range(len(proposal_scores)), key=lambda i: (proposal_scores[i], -i))
    return best if proposal_scores[best] > parent_score else None


class ValidatedAcceptance:
    name = "validated"

    def __init__(self, validation_k: int = 4, validation_size: int = 32):
        self.k, self.size = validation_k, validation_size

    def accept(self, candidates, ctx):
        root, pool = roots(candidates), updates(candidates)
        val = ctx.validation[: self.size]  # the run's validation rows: a seeded, fixed sample
        if not val:
            raise RuntimeError("validated acceptance needs held-out validation rows (search/splits.py)")
        groups = []  # (parent, [proposals])
        for p in (c for c in candidates if c.status == Status.KEPT):
            mine = [c for c in pool if root.get(c.id) == p.id]
            groups.append((p, ctx.streams.rng("validate", p.id).sample(mine, min(self.k, len(mine)))))
        texts = list(dict.fromkeys(c.text for p, props in groups for c in [p, *props]))
        ctx.trace.at("select", ctx.round)
        rewards = ctx.scorer.rewards([(t, ex) for t in texts for ex in val])
        score = {t: sum(rewards[i * len(val) : (i + 1) * len(val)]) / max(1, len(val)) for i, t in enumerate(texts)}
        beam = []
        for p, props in groups:
            for c in [p, *props]:
                c.estimate, c.pulls = score[c.text], len(val)
            win = validated_choice(score[p.text], [score[c.text] for c in props])
            beam.append(p if win is None else props[win])
        beam.sort(key=lambda c: -(c.estimate or 0.0))
        return (
            [replace(c, status=Status.BEAM) for c in beam],
            {"acceptance": "validated", "budget_used": len(texts) * len(val), "validation_size": len(val)},
        )


def _validated_cost(size: SelectionCost) -> None:
    """Each parent and up to ``validation_k`` of its proposals on the ``validation_size`` rows, one batch."""
    sel = size.cfg.selection
    size.target.add(size.parents * (1 + min(sel.validation_k, size.new)) * sel.validation_size, size.target_in)


RULE = Rule(
    "validated",
    make=lambda cfg: ValidatedAcceptance(cfg.selection.validation_k, cfg.selection.validation_size),
    knobs=frozenset({"validation_k", "validation_size"}),
    cost=_validated_cost,
)
