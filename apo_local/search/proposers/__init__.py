"""Proposers: how new candidate instructions are made from the beam.

Every proposer is one step of the same loop (``BeamSearch``): ``propose(parents, ctx)`` returns new
candidates (their ``status`` says if admission dropped or rejected them); the acceptance rule then picks
the beam. Each optimizer step is one batched call for the whole beam.

* ``protegi`` (Pryzant et al., 2023, the default): minibatch errors -> textual gradients -> edits ->
  Monte-Carlo paraphrases (``protegi.py``);
* update-operator ablations of Melcer et al. (2025), each replacing the gradient -> edit pair and keeping
  paraphrases, admission and the cap: ``one-step`` (``one_step.py``), ``three-stage`` (``three_stage.py``),
  and the data-free ``rewrite`` / ``improve`` (``rewrite.py``, ``improve.py``);
* ``abo``: Automatic Behavior Optimization (Ma et al., 2024; ``abo.py``, ``abo_format.py``);
* ``fewshot`` / ``instruction+fewshot``: few-shot demonstrations as an optimized section, alone or
  interleaved with ProTeGi instruction edits (``fewshot.py``).

What the data-driven proposers are shown (true or wrong labels, real or pseudo errors, outputs with or
without evaluation) is the ``feedback`` config section, applied by ``search/feedback``.
"""

from __future__ import annotations

from typing import Protocol

from apo_local.errors import ApoError
from apo_local.search.context import RoundContext
from apo_local.search.proposers.abo import ABOProposer
from apo_local.search.proposers.fewshot import FewShotProposer, InstructionFewShotProposer
from apo_local.search.proposers.improve import ImproveProposer
from apo_local.search.proposers.one_step import OneStepProposer
from apo_local.search.proposers.protegi import ProTeGiProposer
from apo_local.search.proposers.rewrite import RewriteProposer
from apo_local.search.proposers.three_stage import ThreeStageProposer
from apo_local.search.state import Candidate

__all__ = ["PROPOSERS", "Proposer", "make_proposer"]


class Proposer(Protocol):
    name: str

    def propose(self, parents: list[Candidate], ctx: RoundContext) -> list[Candidate]:
        """New candidates (parents excluded); their ``status`` says if they were dropped."""


PROPOSERS = {cls.name: cls for cls in (ProTeGiProposer, OneStepProposer, ThreeStageProposer, RewriteProposer,
                                       ImproveProposer, ABOProposer, FewShotProposer, InstructionFewShotProposer)}


def proposer_options(name: str, cfg) -> dict:
    """The proposer's constructor options: its config section, less the knobs it does not take."""
    section = {"protegi": "protegi", "one-step": "protegi", "three-stage": "protegi",
               "instruction+fewshot": "fewshot"}.get(name, name)
    options = getattr(cfg, section.replace("-", "_")).model_dump()
    if name == "instruction+fewshot":
        options["protegi"] = cfg.protegi.model_dump()
    if name == "one-step":
        options.pop("reasons_per_gradient")
    return options


def make_proposer(name: str, cfg=None) -> Proposer:
    """The proposer ``name``, with its options from ``cfg`` (a ``RunConfig``; None: the defaults)."""
    if name not in PROPOSERS:
        raise ApoError(f"unknown proposer {name!r} (known: {', '.join(PROPOSERS)})")
    return PROPOSERS[name](**(proposer_options(name, cfg) if cfg is not None else {}))
