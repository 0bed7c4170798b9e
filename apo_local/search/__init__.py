"""ProTeGi search as a composition: proposer x selector x beam, run by one loop (``BeamSearch``)."""

from apo_local.search.beam import BeamSearch, RunResult
from apo_local.search.candidates import Candidate
from apo_local.search.proposers import PROPOSERS, Proposer, make_proposer
from apo_local.search.selectors import SELECTORS, Selector, SelectionResult, make_selector

__all__ = ["BeamSearch", "Candidate", "PROPOSERS", "Proposer", "RunResult", "SELECTORS", "SelectionResult", "Selector",
           "make_proposer", "make_selector"]
