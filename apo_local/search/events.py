"""What the loop reports as it goes: a ``Recorder`` is told each phase boundary, with the state at that point.

The loop writes nothing itself. The run (``run/recorder.py``) writes the round files and the checkpoint from these
events; experiment tracking logs each round's metrics from ``selected``. ``Recorders`` tells several at once.
"""

from __future__ import annotations

from typing import Protocol

from apo_local.search.state import RunState


class Recorder(Protocol):
    def expanded(self, state: RunState) -> None:
        """A round's proposals are candidates (``state.candidates``, phase ``EXPANDED``)."""

    def selected(self, state: RunState) -> None:
        """A round's selection ended: ``state.beam``, and its history entry is ``state.history[-1]``."""

    def finished(self, state: RunState) -> None:
        """The rounds are over (phase ``FINAL``): ``state.stop_reason`` says why."""


class Recorders:
    """Several recorders told the same events, in order."""

    def __init__(self, *recorders: Recorder):
        self.recorders = recorders

    def expanded(self, state: RunState) -> None:
        for r in self.recorders:
            r.expanded(state)

    def selected(self, state: RunState) -> None:
        for r in self.recorders:
            r.selected(state)

    def finished(self, state: RunState) -> None:
        for r in self.recorders:
            r.finished(state)
