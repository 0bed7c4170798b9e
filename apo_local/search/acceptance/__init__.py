"""Acceptance: how the next beam is chosen among the kept parents and the round's proposals.

One protocol, three rules (``selection.acceptance``):

* ``bandit`` (ProTeGi): a best-arm selector (``search/selectors``) picks ``beam_size`` arms on few evaluations;
* ``naive`` (Melcer et al., 2025): the update (edit) is accepted, unevaluated; never a paraphrase;
* ``validated`` (Melcer et al., 2025): a parent is replaced only by a proposal that beats it on fixed
  held-out validation rows (never the training rows the errors came from).

``accept`` sets ``estimate``/``pulls`` on the candidates it scored and returns the next beam (copies,
best first) and the round's ``selection`` record; the loop marks every competing candidate beam or not.
"""

from __future__ import annotations

from typing import Protocol

from apo_local.search.acceptance.bandit import BanditAcceptance
from apo_local.search.acceptance.naive import NaiveAcceptance, naive_beam
from apo_local.search.acceptance.validated import ValidatedAcceptance, roots, validated_choice
from apo_local.search.context import RoundContext
from apo_local.search.state import Candidate

__all__ = ["ACCEPTANCE", "Acceptance", "BanditAcceptance", "NaiveAcceptance", "ValidatedAcceptance", "naive_beam",
           "roots", "validated_choice"]


class Acceptance(Protocol):
    name: str

    def accept(self, candidates: list[Candidate], ctx: RoundContext) -> tuple[list[Candidate], dict]:
        """The next beam (copies, best first) and the history's ``selection`` record."""


ACCEPTANCE = {"bandit": BanditAcceptance, "naive": NaiveAcceptance, "validated": ValidatedAcceptance}
