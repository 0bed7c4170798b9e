"""The run's recorder of the search (``search/events.py``): at each phase boundary it writes the round's candidates
(``rounds/round-NN.json``) and the checkpoint (the state, the ledger's totals, the scorer's predictions, the search
time), and it keeps every candidate record of the run for the edit attribution, so nothing is read back from disk
that this process wrote. Without a run directory it keeps the records only.
"""

from __future__ import annotations

import json

from apo_local.ledger import Budget, Trace
from apo_local.run import attribution
from apo_local.run.checkpoint import Checkpoint
from apo_local.run.run_dir import RunDir, write_json
from apo_local.scoring import Scorer
from apo_local.search.state import Phase, RunState


class RunRecorder:
    def __init__(
        self, run_dir: RunDir | None, checkpoint: Checkpoint | None, trace: Trace, scorer: Scorer, budget: Budget
    ):
        self.run_dir, self.checkpoint_file, self.trace, self.scorer, self.budget = (
            run_dir,
            checkpoint,
            trace,
            scorer,
            budget,
        )
        self.rounds: dict[int, dict] = {}  # round -> its round file's content, as last written
        if run_dir and run_dir.rounds.is_dir():  # a resumed run: the rounds of earlier processes, read once
            for f in sorted(run_dir.rounds.glob("round-*.json")):
                data = json.loads(f.read_text(encoding="utf-8"))
                self.rounds[int(data["round"])] = data

    @property
    def records(self) -> dict[str, dict]:
        """Every candidate record of the run's rounds (a candidate's first round wins): the attribution's input."""
        return attribution.candidate_records(self.rounds[r] for r in sorted(self.rounds))

    # -- the search's events ---------------------------------------------------------------

    def expanded(self, state: RunState) -> None:
        self._write_round(state)
        self.checkpoint(state)

    def selected(self, state: RunState) -> None:
        self._write_round(state)
        self.checkpoint(state)

    def finished(self, state: RunState) -> None:
        self.checkpoint(state)

    # -- the run's own --------------------------------------------------------------------

    def done(self, state: RunState) -> None:
        """The run's last write: the checkpoint says DONE (after results.json and the predictions are written)."""
        state.phase = Phase.DONE
        self.checkpoint(state)

    def checkpoint(self, state: RunState) -> None:
        if self.checkpoint_file:
            state.elapsed = self.budget.elapsed
            state.totals, state.faults, state.counts = self.trace.totals_dict(), self.trace.faults, self.trace.counts
            state.rejections = self.trace.rejections
            state.predictions = self.scorer.export_memo()
            self.checkpoint_file.save(state)

    def _write_round(self, state: RunState) -> None:
        data = {"round": state.round, "phase": state.phase.value, "candidates": [c.to_dict() for c in state.candidates]}
        self.rounds[state.round] = data
        if self.run_dir:
            write_json(self.run_dir.round_file(state.round), data)
