"""The pool naive and validated acceptance choose from (Melcer et al., 2025): the round's updates.

An update is a new candidate the proposer's update operator made (an edit, a rewrite, a revised step list):
never a Monte-Carlo paraphrase, which is a paraphrase of an unchanged prompt, not an update. Both rules take
their choices from this one pool, so the naive-vs-validated contrast differs in acceptance only: the same
operator proposes to both, one accepts an update unevaluated, the other only if it beats its parent on the
validation rows. (The config refuses ``mc_samples`` with either rule: the paraphrases would be thrown away.)
"""

from __future__ import annotations

from collections.abc import Sequence

from apo_local.search.state import Candidate, Status

PARAPHRASE = "paraphrase"


def updates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The round's new candidates that are updates (in proposal order)."""
    return [c for c in candidates if c.status == Status.NEW and c.operator != PARAPHRASE]
