"""Prompt search as a composition: proposer x acceptance (selector) x beam x feedback, run by one loop.

Read in this order: ``state.py`` (Candidate, RunState), ``beam.py`` (the loop), ``events.py`` (what the loop
reports), ``context.py`` (what a round's ingredients work with), ``proposers/``, ``acceptance/`` (with
``selectors/``), ``feedback/``. Nothing here writes a file: before round 1 and after the last is the run's
(``apo_local/run/``).
"""

from apo_local.search.beam import BeamSearch
from apo_local.search.proposers import PROPOSERS, Proposer, make_proposer
from apo_local.search.selectors import SELECTORS, SelectionResult, Selector, make_selector
from apo_local.search.state import Candidate, Phase, RunState, Status

__all__ = [
    "BeamSearch",
    "Candidate",
    "PROPOSERS",
    "Phase",
    "Proposer",
    "RunState",
    "SELECTORS",
    "SelectionResult",
    "Selector",
    "Status",
    "make_proposer",
    "make_selector",
]
