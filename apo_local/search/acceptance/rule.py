"""``Rule``: what apo-local needs to know of an acceptance rule, declared in the rule's own module (``RULE``).

``make``: the rule, with its options from the config (a selector for the bandit). ``knobs``: the ``selection`` keys
it reads. ``cost``: adds one round's selection to the pre-run estimate (``SelectionCost``). The registry
(``acceptance/__init__.py``) collects the declarations; the config's ``selection.acceptance`` names one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apo_local.config.schema import RunConfig


@dataclass
class SelectionCost:
    """One round's selection as the estimate sees it: ``parents`` kept, ``new`` proposals, ``target_in`` tokens
    of one target prompt; ``target``: the estimate's target tally (``add(prompts, in_tokens)``, ``calls``,
    ``prompts``, ``input_tokens``)."""

    cfg: RunConfig
    target: Any
    parents: int
    new: int
    target_in: int


@dataclass(frozen=True)
class Rule:
    name: str
    make: Callable[[RunConfig], Any]
    knobs: frozenset[str]
    cost: Callable[[SelectionCost], None]
