"""Naive acceptance (Melcer et al., 2025): accept the update. The beam becomes ``beam_size`` of the round's
updates (edits, rewrites, revised steps: a seeded pick from ``pool.updates``, the pool validated acceptance
chooses from too), unevaluated. Paraphrases are never accepted (they are no update: a paraphrase of the
unchanged parent would let the search stand still; the config refuses ``mc_samples`` with naive acceptance);
parents fill the beam only when there are too few updates."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from apo_local.search.acceptance.pool import updates
from apo_local.search.acceptance.rule import Rule
from apo_local.search.state import Status


def naive_beam(new: Sequence, kept: Sequence, k: int, rng: random.Random) -> list:
    """``k`` newest proposals (seeded pick, in proposal order), topped up with parents if too few."""
    idx = sorted(rng.sample(range(len(new)), min(k, len(new))))
    chosen = [new[i] for i in idx]
    return chosen + list(kept[: k - len(chosen)])


class NaiveAcceptance:
    name = "naive"

    def accept(self, candidates, ctx):
        new = updates(candidates)
        kept = [c for c in candidates if c.status == Status.KEPT]
        beam = naive_beam(new, kept, ctx.beam_size, ctx.streams.rng("accept"))
        return [replace(c, status=Status.BEAM) for c in beam], {"acceptance": "naive", "budget_used": 0}


RULE = Rule("naive", make=lambda cfg: NaiveAcceptance(), knobs=frozenset(), cost=lambda size: None)  # no engine call
