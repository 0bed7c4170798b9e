"""The search loop: rounds of expand (proposer) -> select (acceptance) over a beam of prompts.

Every method and ablation is a configuration of this one loop: which proposer, which acceptance rule
(a bandit selector, naive or validated), what beam size, how many rounds, and what feedback the optimizer
is shown. The state (``RunState``) is checkpointed at every phase boundary; a resumed run re-derives its
randomness from (seed, round, purpose) and replays finished engine calls from the result cache, so it
ends with the same ``results.json`` as an uninterrupted run. Budget caps are checked at every phase
boundary and before every engine batch; when one fires the run ends with the beam of the last completed
selection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace

from apo_local.config.schema import RunConfig
from apo_local.engine import RoleEngine, Trace
from apo_local.run.run_dir import RunDir, write_json
from apo_local.scoring import Scorer
from apo_local.run import attribution as attr
from apo_local.search.acceptance import make_acceptance
from apo_local.search.acceptance.length import prompt_tokens, shortest_within_ci
from apo_local.search.admission import Admission
from apo_local.run.baselines import best_constant, constant_evaluations, majority_label
from apo_local.ledger import Budget, BudgetStop
from apo_local.search.context import RoundContext
from apo_local.search.feedback import corrupt_examples, make_feedback
from apo_local.run.final_pick import REWARD, guarded_beside, pick_on_validation, validation_scores
from apo_local.run.headline import SplitStats, headline
from apo_local.search.hygiene import make_hygiene
from apo_local.search.meta_prompts import MetaPrompts
from apo_local.search.optimizer_calls import OptimizerCalls
from apo_local.search.proposers import make_proposer, target_answer
from apo_local.run.result import RunResult, reply_summary
from apo_local.search.selectors import reward_scale
from apo_local.search.splits import eval_rows, train_rows, validation_rows
from apo_local.search.state import Candidate, Phase, RunState, Status
from apo_local.search.streams import Streams
from apo_local.support.errors import ApoError
from apo_local.tasks import Task
from apo_local.tasks.metrics import selection_weights

log = logging.getLogger("apo_local")

__all__ = ["BeamSearch", "RunResult"]


class BeamSearch:
    def __init__(
        self,
        task: Task,
        target: RoleEngine,
        optimizer: RoleEngine,
        cfg: RunConfig,
        run_dir: RunDir | None = None,
        on_round: Callable[[dict], None] | None = None,
    ):
        self.task, self.cfg, self.run_dir, self.optimizer = task, cfg, run_dir, optimizer
        self.trace: Trace = target.trace
        self.proposer = make_proposer(cfg.search.proposer, cfg)
        self.acceptance = make_acceptance(cfg)
        self.train = train_rows(task, cfg)
        self.validation = validation_rows(task, cfg)
        self.test = eval_rows(task, cfg)
        answer = target_answer(cfg)
        self.scorer = Scorer(task, target, *answer[:2], answer=answer.reading, calibration=cfg.scoring.calibration)
        self.meta = MetaPrompts(cfg.meta_prompts.model_dump())
        f = cfg.feedback  # labels the selection rewards are computed against (same example ids)
        if "wrong" in (f.labels, f.selection_labels) or f.errors == "pseudo":
            corrupt_examples(
                self.train[:1], task, cfg.seed, f.numeric_offset
            )  # refuse a task that can't be corrupted, now
        self.selection_train = self.train
        if f.selection_labels == "wrong":  # the selection (bandit, validation, final pick) sees the wrong labels
            self.selection_train, self.validation = (
                corrupt_examples(rows, task, cfg.seed, f.numeric_offset) for rows in (self.train, self.validation)
            )
        if cfg.selection.reward == "metric":  # the selection follows the task's metric (F1: class-balanced)
            self.scorer.reward_weights = selection_weights(task.metric.name, [ex.label for ex in self.selection_train])
        self.budget = Budget(cfg.budget, self.trace)
        self.feedback = make_feedback(
            f,
            task,
            cfg.seed,
            self.train,
            self.scorer,
            self.trace,
            self.meta,
            cfg.search.minibatch_size,
            before_call=self._check_budget,
        )
        self.admission = Admission(
            task,
            target,
            self.trace,
            cfg.search.max_expansion,
            hygiene=make_hygiene(
                cfg.search.hygiene, [ex.input for ex in self.train], task.labels, cfg.search.copy_overlap
            ),
            max_prompt_tokens=cfg.search.max_prompt_tokens,
        )
        self.on_round = on_round or (lambda entry: None)  # each round's history entry, as its selection ends
        self._records: dict[str, dict] = {}  # every candidate record of this process's rounds (no run directory)

    def _check_budget(self) -> None:
        self.budget.check()

    def context(self, rnd: int) -> RoundContext:
        streams = Streams(self.cfg.seed, rnd)
        calls = OptimizerCalls(
            self.optimizer, self.cfg.optimizer, self.cfg.search.parse_fallback, streams, before_call=self._check_budget
        )
        return RoundContext(
            round=rnd,
            seed=self.cfg.seed,
            task=self.task,
            train=self.train,
            selection_train=self.selection_train,
            scorer=self.scorer,
            trace=self.trace,
            streams=streams,
            optimizer=calls,
            feedback=self.feedback,
            admission=self.admission,
            meta=self.meta,
            budget=self.budget,
            beam_size=self.cfg.search.beam_size,
            validation=self.validation,
        )

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> RunResult:
        """The rounds, then the final evaluation. A resumed run goes on from its checkpoint's phase; one killed
        in the final phase (``Phase.FINAL``, or ``DONE`` without results) does the final evaluation again from
        its recorded stop reason (the scorer's memo and the result cache answer what was computed). The run is
        finished only when the runner has written results.json and called ``mark_done``."""
        state = self._load_state()
        self.state = state
        self._check_initial_size(state.initial)
        self.budget = Budget(self.cfg.budget, self.trace, state.elapsed)
        if state.phase not in (Phase.FINAL, Phase.DONE):
            state.stop_reason = self._rounds(state)
            state.phase = Phase.FINAL
            self._checkpoint(state)
        return self._final(state, state.stop_reason or "completed")

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

    def mark_done(self) -> None:
        """The run's last write: the checkpoint says DONE (after results.json and the predictions are written)."""
        self.state.phase = Phase.DONE
        self._checkpoint(self.state)

    def _check_initial_size(self, initial: str) -> None:
        """An initial prompt over ``search.max_prompt_tokens`` can't start a search under that cap: one line."""
        cap = self.cfg.search.max_prompt_tokens
        if cap is not None:
            n = prompt_tokens(self.task, self.scorer.engine, [initial])[0]
            if n > cap:
                raise ApoError(
                    f"search.max_prompt_tokens: the initial prompt is {n} target tokens, over the cap of "
                    f"{cap} (the template rendered with an empty input); raise the cap or shorten the prompt"
                )

    # -- phases --------------------------------------------------------------------------

    def _expand(self, state: RunState) -> None:
        self.budget.check()
        rnd = state.round + 1
        log.info("round %d/%d: expanding %d beam prompts", rnd, self.cfg.search.rounds, len(state.beam))
        parents = [replace(c, status=Status.KEPT, reason=None) for c in state.beam]
        new = self.proposer.propose(parents, self.context(rnd))
        state.round, state.phase, state.candidates = rnd, Phase.EXPANDED, parents + new
        self._write_round(state)
        self._checkpoint(state)

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
        self.on_round(state.history[-1])  # e.g. experiment tracking (run/optimize.py)
        state.phase = Phase.SELECTED
        self._write_round(state)
        self._checkpoint(state)
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
            evals = self.scorer.evaluate_many(texts, self.test)
            entry["test"] = [e.metrics[self.task.metric.name] for e in evals]
        return entry

    def _final(self, state: RunState, stop_reason: str) -> RunResult:
        self.trace.at("final", state.round)
        initial, beam = state.initial, state.beam
        beam_texts = [c.text for c in beam]
        elapsed = self.budget.elapsed
        name = self.task.metric.name
        guarded = self.cfg.selection.final_pick in ("guarded", "method")  # method: the guarded pick recorded beside
        on_validation = validation_scores(
            self.scorer, self.validation, list(dict.fromkeys(beam_texts + ([initial] if guarded else []))), name
        )
        evals = self.scorer.evaluate_many(list(dict.fromkeys(beam_texts + [initial])), self.test)
        by_text = {e.instruction: e for e in evals}
        best = max(beam_texts, key=lambda t: (by_text[t].metrics[name], -beam_texts.index(t)))
        selected, pick, selected_by = self._pick(beam, on_validation, initial)
        attribution = self._attribution(state, selected) if self.cfg.evaluation.attribution else None
        stats = SplitStats(self.task.metric, self.test)
        result = RunResult(
            metric=name,
            initial_prompt=initial,
            best_prompt=best,
            selected_prompt=selected,
            initial_test=stats.summary(by_text[initial]),
            best_test=stats.summary(by_text[best]),
            selected_test=stats.summary(by_text[selected]),
            pick=pick,
            beam=[
                dict(
                    id=c.id,
                    text=c.text,
                    estimate=c.estimate,
                    validation=on_validation.get(c.text),
                    test=by_text[c.text].metrics[name],
                )
                for c in beam
            ],
            rounds_completed=len(state.history),
            stop_reason=stop_reason,
            history=state.history,
            selected_by=selected_by,
            selected_vs_initial=stats.paired(by_text[selected], by_text[initial]),
            initial_validation=on_validation.get(initial),
            attribution=attribution,
            **self._ledger(elapsed),
            **self._constant_baselines(stats, by_text[selected]),
        )
        result.headline = headline(result.to_dict())
        return result

    def _ledger(self, elapsed: float) -> dict:
        """The run's usage, faults, optimizer replies and time, from the trace."""
        totals = self.trace.totals_dict()
        return dict(
            usage={r: {k: v for k, v in t.items() if k not in ("seconds", "cache_hits")} for r, t in totals.items()},
            faults=dict(sorted(self.trace.faults.items())),
            replies=reply_summary(self.trace.counts, self.cfg.optimizer.guided),
            time={
                "seconds": round(elapsed, 1),
                "by_role": {r: round(t["seconds"], 1) for r, t in totals.items()},
                "cache_hits": {r: t["cache_hits"] for r, t in totals.items()},
            },
        )

    def _constant_baselines(self, stats: SplitStats, selected) -> dict:
        """What always answering one label scores on the test rows, the best of them, and the selected prompt
        minus that best constant (none for a task without labels)."""
        constants = constant_evaluations(self.task, self.test)
        majority = majority_label(self.task, self.train)
        top = best_constant(constants, self.task.metric.name, majority)
        if top is None:
            return dict(constant_baselines=None, selected_vs_constant=None)
        by_label = {label: stats.summary(e) for label, e in constants.items()}
        return dict(
            constant_baselines={"best": top, "majority_label": majority, "by_label": by_label},
            selected_vs_constant=stats.paired(selected, constants[top]),
        )

    def _attribution(self, state: RunState, selected: str) -> dict:
        """Edit attribution of the selected prompt (``run/attribution.py``) on the true validation rows and the
        test rows; its engine calls belong to the final evaluation (the trace's phase "final")."""
        return attr.compute(
            self.scorer,
            self.task,
            self._round_records(),
            selected,
            state.initial,
            validation_rows(self.task, self.cfg),
            self.test,
        )

    def _round_records(self) -> dict[str, dict]:
        """Every candidate record of the run's rounds: the round files (a resumed run's earlier rounds too)."""
        if self.run_dir and self.run_dir.rounds.is_dir():
            files = sorted(self.run_dir.rounds.glob("round-*.json"))
            return attr.candidate_records(json.loads(f.read_text(encoding="utf-8")) for f in files)
        return self._records

    def _pick(
        self, beam: list[Candidate], on_validation: dict[str, dict], initial: str
    ) -> tuple[str, dict | None, str]:
        """The selected prompt (``selection.pick``), the pick's record and how it was chosen: by default the
        best prompt on the validation rows by the selection's reward (F1-type metrics: balanced accuracy), the
        initial prompt competing with the final beam (``selection.final_pick: guarded``; ties go to the beam, in
        its order, the initial prompt last), or with ``final_pick: reference`` the best final beam prompt by the
        task's metric; without validation rows the top selection estimate; or the beam's shortest prompt within
        the CI of the best estimate. ``final_pick: method`` picks nothing: the method's own final prompt (the
        final beam's first: the acceptance rule's choice), the guarded pick recorded beside it."""
        if self.cfg.selection.pick == "estimate":
            if self.cfg.selection.final_pick == "method":
                beside = guarded_beside(on_validation, [c.text for c in beam], initial, len(self.validation))
                return beam[0].text, beside, "the method's own final prompt (the final beam's first)"
            if not on_validation:
                return beam[0].text, None, "selection estimate"
            key = REWARD if self.cfg.selection.final_pick == "guarded" else self.task.metric.name
            best, how = pick_on_validation(on_validation, key, [c.text for c in beam], initial, len(self.validation))
            return best, None, how
        tokens = prompt_tokens(self.task, self.scorer.engine, [c.text for c in beam])
        i = shortest_within_ci(
            [c.estimate for c in beam], [c.pulls for c in beam], tokens, reward_scale(self.scorer.reward_weights)
        )
        return (
            beam[i].text,
            {
                "rule": "shortest-within-ci",
                "selected_id": beam[i].id,
                "beam": [[c.id, c.estimate, c.pulls, t] for c, t in zip(beam, tokens)],
            },
            "shortest within the CI of the best estimate",
        )

    # -- state ---------------------------------------------------------------------------

    def _load_state(self) -> RunState:
        saved = RunState.load(self.run_dir.checkpoint) if self.run_dir else None
        if saved:
            self.trace.restore(saved.totals, saved.faults, saved.counts)
            self.scorer.import_memo(saved.predictions)
            log.info("resuming at round %d (%s)", saved.round, saved.phase.value)
            return saved
        return RunState.fresh(self.cfg.search.initial_prompt or self.task.initial_instruction)

    def _checkpoint(self, state: RunState) -> None:
        if self.run_dir:
            state.elapsed = self.budget.elapsed
            state.totals, state.faults, state.counts = self.trace.totals_dict(), self.trace.faults, self.trace.counts
            state.predictions = self.scorer.export_memo()
            state.save(self.run_dir.checkpoint)

    def _write_round(self, state: RunState) -> None:
        self._records.update({c.id: c.to_dict() for c in state.candidates if c.id not in self._records})
        if self.run_dir:
            write_json(
                self.run_dir.round_file(state.round),
                {
                    "round": state.round,
                    "phase": state.phase.value,
                    "candidates": [c.to_dict() for c in state.candidates],
                },
            )


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
