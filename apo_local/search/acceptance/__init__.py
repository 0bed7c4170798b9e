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

from apo_local.config.schema import RunConfig
from apo_local.search.acceptance.bandit import BanditAcceptance
from apo_local.search.acceptance.length import LengthAware
from apo_local.search.acceptance.naive import NaiveAcceptance, naive_beam
from apo_local.search.acceptance.validated import ValidatedAcceptance, roots, validated_choice
from apo_local.search.context import RoundContext
from apo_local.search.selectors import make_selector
from apo_local.search.state import Candidate

__all__ = [
    "ACCEPTANCE",
    "Acceptance",
    "BanditAcceptance",
    "NaiveAcceptance",
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


ACCEPTANCE = {"bandit": BanditAcceptance, "naive": NaiveAcceptance, "validated": ValidatedAcceptance}


def selector_params(cfg: RunConfig) -> dict:
    sel = cfg.selection
    params = dict(budget=sel.budget, batch_size=sel.batch_size)
    if sel.selector == "ucb":
        params.update(c=sel.ucb_c, t_unit=sel.ucb_t, arms_per_round=sel.arms_per_round, warmup=sel.warmup)
    elif sel.selector == "ucb-e":
        params.update(a=sel.ucb_e_a, arms_per_round=sel.arms_per_round, warmup=sel.warmup)
    return params


def make_acceptance(cfg: RunConfig) -> Acceptance:
    sel = cfg.selection
    selector = make_selector(sel.selector, **selector_params(cfg))  # refused when unknown, whatever the rule
    if sel.acceptance == "bandit":
        rule: Acceptance = BanditAcceptance(selector, shared=sel.sample == "shared")
    elif sel.acceptance == "validated":
        rule = ValidatedAcceptance(sel.validation_k, sel.validation_size)
    else:
        rule = ACCEPTANCE[sel.acceptance]()
    return rule if sel.length_objective == "off" else LengthAware(rule, sel.length_objective, sel.length_penalty)
