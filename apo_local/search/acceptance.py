"""Acceptance rules other than the bandit (``selection.acceptance``; Melcer et al., 2025). Pure parts.

* ``naive``: accept every update: the beam becomes ``beam_size`` of the newest proposals (a seeded
  pick), unevaluated; parents fill the beam only when there are too few proposals.
* ``validated``: per parent, ``validation_k`` of its proposals (seeded pick) and the parent are
  scored on one fixed seeded validation sample (one engine batch for the whole beam); the parent
  is replaced by its best proposal only if that proposal's score is strictly higher. The beam keeps
  one slot per parent.
"""

from __future__ import annotations

import random
from typing import Sequence


def roots(candidates: Sequence[dict]) -> dict[str, str]:
    """Candidate id -> id of the beam parent ("kept") it descends from (through edit -> paraphrase chains)."""
    parent_of = {c["id"]: c.get("parent") for c in candidates}
    kept = {c["id"] for c in candidates if c["status"] == "kept"}
    out = {}
    for c in candidates:
        node, seen = c["id"], set()
        while node not in kept and node is not None and node not in seen:
            seen.add(node)
            node = parent_of.get(node)
        if node in kept:
            out[c["id"]] = node
    return out


def naive_beam(new: Sequence[dict], kept: Sequence[dict], k: int, rng: random.Random) -> list[dict]:
    """``k`` newest proposals (seeded pick, in proposal order), topped up with parents if too few."""
    idx = sorted(rng.sample(range(len(new)), min(k, len(new))))
    chosen = [new[i] for i in idx]
    return chosen + list(kept[: k - len(chosen)])


def validated_choice(parent_score: float, proposal_scores: Sequence[float]) -> int | None:
    """Index of the best proposal (earliest on ties) if it strictly beats the parent, else None."""
    if not proposal_scores:
        return None
    best = max(range(len(proposal_scores)), key=lambda i: (proposal_scores[i], -i))
    return best if proposal_scores[best] > parent_score else None


def validation_sample(examples: Sequence, size: int, seed: int) -> list:
    """The fixed validation sample: same for every round of a run (and on resume)."""
    return random.Random(f"{seed}|validation").sample(list(examples), min(size, len(examples)))
