"""Proposers: how new candidate instructions are made from the beam.

Every proposer is one step of the same loop (``BeamSearch``): ``propose(parents, ctx)`` returns new
candidates (their ``status`` says if admission dropped or rejected them); the acceptance rule then picks
the beam. Each optimizer step is one batched call for the whole beam.

Each method is declared once, in its own module (``METHOD``, a ``method.Method``): found here, it is what
the config, the presets, the estimate and the splits read.

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

import importlib
import pkgutil
from typing import Protocol

from apo_local.config.schema import RunConfig
from apo_local.search.context import RoundContext
from apo_local.search.proposers.method import Expansion, Method, TargetAnswer
from apo_local.search.state import Candidate
from apo_local.support.errors import ApoError

__all__ = [
    "METHODS",
    "METHOD_SECTIONS",
    "PROPOSERS",
    "Expansion",
    "Method",
    "Proposer",
    "TargetAnswer",
    "declared_methods",
    "make_proposer",
    "method_of",
    "register_method",
    "target_answer",
]


class Proposer(Protocol):
    name: str

    def propose(self, parents: list[Candidate], ctx: RoundContext) -> list[Candidate]:
        """New candidates (parents excluded); their ``status`` says if they were dropped."""


def declared_methods(path, package: str) -> list[Method]:
    """Every ``METHOD`` (or ``METHODS``) of the modules of ``package`` (its folder: ``path``), in rank order."""
    found: list[Method] = []
    for info in pkgutil.iter_modules(path):
        module = importlib.import_module(f"{package}.{info.name}")
        found += [m for m in (getattr(module, "METHOD", None), *getattr(module, "METHODS", ())) if m is not None]
    return sorted(found, key=lambda m: m.rank)


METHODS: dict[str, Method] = {m.name: m for m in declared_methods(__path__, __name__)}
PROPOSERS = {name: m.proposer for name, m in METHODS.items()}  # name -> the proposer class
# the config sections of the methods, in the order of their methods
METHOD_SECTIONS = tuple(dict.fromkeys(section for m in METHODS.values() for section in m.knobs))


def register_method(method: Method) -> Method:
    """Add a method of your own (or replace one of that name): configs may then name it as ``search.proposer``.
    Its knobs must live in the existing method sections (``METHOD_SECTIONS``)."""
    unknown = set(method.knobs) - set(METHOD_SECTIONS)
    if unknown:
        raise ApoError(
            f"method {method.name!r}: no config section {sorted(unknown)[0]!r} (known: {', '.join(METHOD_SECTIONS)})"
        )
    METHODS[method.name] = method
    PROPOSERS[method.name] = method.proposer
    return method


def method_of(name: str) -> Method:
    if name not in METHODS:
        raise ApoError(f"unknown proposer {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]


def make_proposer(name: str, cfg: RunConfig | None = None) -> Proposer:
    """The proposer ``name``, with its options from ``cfg`` (a ``RunConfig``; None: the defaults)."""
    return method_of(name).make(cfg)


def target_answer(cfg: RunConfig) -> TargetAnswer:
    """How the target answers in this run: (scoring mode, most answer tokens, how a reply is read)."""
    return method_of(cfg.search.proposer).target_answer(cfg)
