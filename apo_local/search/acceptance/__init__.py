"""Acceptance: how the next beam is chosen among the kept parents and the round's proposals.

One protocol, three rules (``selection.acceptance``), each declared in its own module (``RULE``: ``rule.py``):

* ``bandit`` (ProTeGi): a best-arm selector (``search/selectors``) picks ``beam_size`` arms on few evaluations;
* ``naive`` (Melcer et al., 2025): the update (edit) is accepted, unevaluated; never a paraphrase;
* ``validated`` (Melcer et al., 2025): a parent is replaced only by a proposal that beats it on fixed
  held-out validation rows (never the training rows the errors came from).

``accept`` sets ``estimate``/``pulls`` on the candidates it scored and returns the next beam (copies,
best first) and the round's ``selection`` record; the loop marks every competing candidate beam or not.
"""

from __future__ import annotations

from typing import Protocol

from apo_local.config.schema import RunConfig
from apo_local.search.acceptance import bandit, naive, validated
from apo_local.search.acceptance.bandit import BanditAcceptance, selector_params
from apo_local.search.acceptance.length import LengthAware
from apo_local.search.acceptance.naive import NaiveAcceptance, naive_beam
from apo_local.search.acceptance.rule import Rule, SelectionCost
from apo_local.search.acceptance.validated import ValidatedAcceptance, roots, validated_choice
from apo_local.search.context import RoundContext
from apo_local.search.selectors import make_selector
from apo_local.search.state import Candidate

__all__ = [
    "Acceptance",
    "BanditAcceptance",
    "NaiveAcceptance",
    "RULES",
    "Rule",
    "SelectionCost",
    "ValidatedAcceptance",
    "make_acceptance",
    "naive_beam",
    "roots",
    "selector_params",
    "validated_choice",
]


class Acceptance(Protocol):
    name: str

    def accept(self, candidates: list[Candidate], ctx: RoundContext) -> tuple[list[Candidate], dict]:
        """The next beam (copies, best first) and the history's ``selection`` record."""


RULES: dict[str, Rule] = {rule.name: rule for rule in (bandit.RULE, naive.RULE, validated.RULE)}


def make_acceptance(cfg: RunConfig) -> Acceptance:
    """The rule ``selection.acceptance`` names, with its options; wrapped by the length objective when one is on."""
    sel = cfg.selection
    make_selector(sel.selector, **selector_params(cfg))  # an unknown selector is refused whatever the rule
    rule = RULES[sel.acceptance].make(cfg)
    return rule if sel.length_objective == "off" else LengthAware(rule, sel.length_objective, sel.length_penalty)
