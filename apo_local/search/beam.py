"""The search loop: rounds of expand (proposer) -> select (acceptance) over a beam of prompts.

Every method and ablation is a configuration of this one loop: which proposer, which acceptance rule
(a bandit selector, naive or validated), what beam size, how many rounds, and what feedback the optimizer
is shown. The loop writes nothing: it tells its recorder (``search/events.py``) each phase boundary, and the
run (``run/``) writes the round files and the checkpoint from those events. A resumed run hands the loop its
checkpoint's state; randomness is re-derived from (seed, round, purpose) and finished engine calls are replayed
from the result cache, so it ends where an uninterrupted run ends. Budget caps are checked at every phase boundary
and, by the role engines, before every engine call; when one fires the rounds end with the beam of the last
completed selection.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from apo_local.config.schema import RunConfig
from apo_local.engine import RoleEngine
from apo_local.ledger import Budget, BudgetStop
from apo_local.scoring import Scorer
from apo_local.search.acceptance import Acceptance
from apo_local.search.admission import Admission
from apo_local.search.context import RoundContext
from apo_local.search.events import Recorder, Recorders
from apo_local.search.feedback import make_feedback
from apo_local.search.hygiene import make_hygiene
from apo_local.search.meta_prompts import MetaPrompts
from apo_local.search.optimizer_calls import OptimizerCalls
from apo_local.search.proposers import Proposer
from apo_local.search.splits import Splits
from apo_local.search.state import Candidate, Phase, RunState, Status
from apo_local.search.streams import Streams
from apo_local.tasks import Task

log = logging.getLogger("apo_local")

__all__ = ["BeamSearch"]


class BeamSearch:
    """One search: ``run(state)`` plays the rounds from ``state`` and returns the state the rounds ended in."""

    def __init__(
        self,
        task: Task,
        cfg: RunConfig,
        splits: Splits,
        proposer: Proposer,
        acceptance: Acceptance,
        scorer: Scorer,
        optimizer: RoleEngine,
        budget: Budget,
        recorder: Recorder | None = None,
    ):
        self.task, self.cfg, self.splits = task, cfg, splits
        self.proposer, self.acceptance, self.scorer, self.optimizer = proposer, acceptance, scorer, optimizer
        self.budget, self.trace = budget, budget.trace
        self.recorder = recorder or Recorders()
        self.meta = MetaPrompts(cfg.meta_prompts.model_dump())
        self.feedback = make_feedback(
            cfg.feedback, task, cfg.seed, splits.train, scorer, self.trace, self.meta, cfg.search.minibatch_size
        )
        self.admission = Admission(
            task,
            scorer.engine,
            self.trace,
            cfg.search.max_expansion,
            hygiene=make_hygiene(
                cfg.search.hygiene, [ex.input for ex in splits.train], task.labels, cfg.search.copy_overlap
            ),
            max_prompt_tokens=cfg.search.max_prompt_tokens,
        )

    def context(self, rnd: int) -> RoundContext:
        streams = Streams(self.cfg.seed, rnd)
        return RoundContext(
            round=rnd,
            seed=self.cfg.seed,
            task=self.task,
            train=self.splits.train,
            selection_train=self.splits.selection_train,
            scorer=self.scorer,
            trace=self.trace,
            streams=streams,
            optimizer=OptimizerCalls(self.optimizer, self.cfg.optimizer, self.cfg.search.parse_fallback, streams),
            feedback=self.feedback,
            admission=self.admission,
            meta=self.meta,
            beam_size=self.cfg.search.beam_size,
            validation=self.splits.selection_validation,
        )

    # -- the loop ------------------------------------------------------------------------

    def run(self, state: RunState) -> RunState:
        """Expand and select from ``state`` until the last round or a budget cap; the state ends in phase ``FINAL``
        with ``stop_reason`` set. A state already past its rounds (``FINAL``, ``DONE``) is returned as it is."""
        if state.phase in (Phase.FINAL, Phase.DONE):
            return state
        state.stop_reason = self._rounds(state)
        state.phase = Phase.FINAL
        self.recorder.finished(state)
        return state

    def _rounds(self, state: RunState) -> str:
        """Expand and select until the last round or a budget cap; returns why the search ended."""
        try:
            while True:
                if state.phase in (Phase.START, Phase.SELECTED):
                    if state.round >= self.cfg.search.rounds:
                        return "completed"
                    self._expand(state)
                if state.phase == Phase.EXPANDED:
                    self._select(state)
        except BudgetStop as stop:
            log.info("stopping: %s", stop.reason)
            return stop.reason

    # -- phases --------------------------------------------------------------------------

    def _expand(self, state: RunState) -> None:
        self.budget.check()
        rnd = state.round + 1
        log.info("round %d/%d: expanding %d beam prompts", rnd, self.cfg.search.rounds, len(state.beam))
        parents = [replace(c, status=Status.KEPT, reason=None) for c in state.beam]
        new = self.proposer.propose(parents, self.context(rnd))
        state.round, state.phase, state.candidates = rnd, Phase.EXPANDED, parents + new
        self.recorder.expanded(state)

    def _select(self, state: RunState) -> None:
        self.budget.check()
        parent_ids = {c.id for c in state.candidates if c.status == Status.KEPT}
        beam, selection = self.acceptance.accept(state.candidates, self.context(state.round))
        chosen = {c.id for c in beam}
        for c in state.candidates:
            if c.competing:
                c.mark(Status.BEAM if c.id in chosen else Status.NOT_SELECTED)
        state.beam = beam
        state.history.append(self._history_entry(state.round, beam, selection, parent_ids))
        state.phase = Phase.SELECTED
        self.recorder.selected(state)
        log.info(
            "round %d: beam estimates %s; best: %s",
            state.round,
            [round(c.estimate or 0, 3) for c in beam],
            _short(beam[0].text),
        )

    def _history_entry(self, rnd: int, beam: list[Candidate], selection: dict, parent_ids: set[str]) -> dict:
        texts = [c.text for c in beam]
        entry = {
            "round": rnd,
            "beam": [(c.id, c.estimate) for c in beam],
            "selection": selection,
            "accepted": any(c.id not in parent_ids for c in beam),
            "prompt_tokens": self.scorer.engine.count_tokens(texts) if texts else [],
        }
        if self.cfg.evaluation.per_round_test:
            self.trace.at("test", rnd)
            with self.budget.suspended():  # a report of the round, not search work: no cap cuts it short
                evals = self.scorer.evaluate_many(texts, self.splits.test)
            entry["test"] = [e.metrics[self.task.metric.name] for e in evals]
        return entry


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
