"""After the last round: the final pick on validation rows, the test evaluation of the beam, the initial prompt and
the constant answers, the edit attribution, and the ``RunResult`` (``results.json``) with its headline.

Its engine calls belong to the trace's phase "final"; the budget no longer applies (the run stopped it). A run
killed anywhere here resumes into this step again: the scorer's memo and the result cache answer what was computed.
"""

from __future__ import annotations

from dataclasses import dataclass

from apo_local.config.schema import RunConfig
from apo_local.ledger import Trace
from apo_local.run import attribution as attr
from apo_local.run.baselines import best_constant, constant_evaluations, majority_label
from apo_local.run.final_pick import REWARD, guarded_beside, pick_on_validation, validation_scores
from apo_local.run.headline import SplitStats, headline
from apo_local.run.result import RunResult, reply_summary
from apo_local.scoring import Scorer
from apo_local.search.acceptance.length import prompt_tokens, shortest_within_ci
from apo_local.search.selectors import reward_scale
from apo_local.search.splits import Splits
from apo_local.search.state import Candidate, RunState
from apo_local.tasks import Task


@dataclass
class Finish:
    """What the final evaluation works with."""

    task: Task
    cfg: RunConfig
    splits: Splits
    scorer: Scorer
    trace: Trace

    def result(self, state: RunState, search_seconds: float, records: dict[str, dict]) -> RunResult:
        """The final pick, the test scores with intervals, the constant answers, the attribution: the run's result.
        ``records``: every candidate record of the run's rounds (the attribution's lineage)."""
        self.trace.at("final", state.round)
        initial, beam, name = state.initial, state.beam, self.task.metric.name
        beam_texts = [c.text for c in beam]
        guarded = self.cfg.selection.final_pick in ("guarded", "method")  # method: the guarded pick recorded beside
        on_validation = validation_scores(
            self.scorer,
            self.splits.selection_validation,
            list(dict.fromkeys(beam_texts + ([initial] if guarded else []))),
            name,
        )
        evals = self.scorer.evaluate_many(list(dict.fromkeys(beam_texts + [initial])), self.splits.test)
        by_text = {e.instruction: e for e in evals}
        best = max(beam_texts, key=lambda t: (by_text[t].metrics[name], -beam_texts.index(t)))
        selected, pick, selected_by = self.pick(beam, on_validation, initial)
        attribution = self.attribution(records, selected, initial) if self.cfg.evaluation.attribution else None
        stats = SplitStats(self.task.metric, self.splits.test)
        result = RunResult(
            metric=name,
            initial_prompt=initial,
            best_prompt=best,
            selected_prompt=selected,
            initial_test=stats.summary(by_text[initial]),
            best_test=stats.summary(by_text[best]),
            selected_test=stats.summary(by_text[selected]),
            pick=pick,
            beam=[_beam_row(c, on_validation, by_text[c.text].metrics[name]) for c in beam],
            rounds_completed=len(state.history),
            stop_reason=state.stop_reason or "completed",
            history=state.history,
            selected_by=selected_by,
            selected_vs_initial=stats.paired(by_text[selected], by_text[initial]),
            initial_validation=on_validation.get(initial),
            attribution=attribution,
            **self.ledger(search_seconds),
            **self.constant_baselines(stats, by_text[selected]),
        )
        result.headline = headline(result.to_dict())
        return result

    def ledger(self, elapsed: float) -> dict:
        """The run's usage, faults, optimizer replies and time, from the trace."""
        totals = self.trace.totals_dict()
        return dict(
            usage={r: {k: v for k, v in t.items() if k not in ("seconds", "cache_hits")} for r, t in totals.items()},
            faults=dict(sorted(self.trace.faults.items())),
            replies=reply_summary(self.trace.counts, self.trace.rejections, self.cfg.optimizer.guided),
            time={
                "seconds": round(elapsed, 1),
                "by_role": {r: round(t["seconds"], 1) for r, t in totals.items()},
                "cache_hits": {r: t["cache_hits"] for r, t in totals.items()},
            },
        )

    def constant_baselines(self, stats: SplitStats, selected) -> dict:
        """What always answering one label scores on the test rows, the best of them, and the selected prompt
        minus that best constant (none for a task without labels)."""
        constants = constant_evaluations(self.task, self.splits.test)
        majority = majority_label(self.task, self.splits.train)
        top = best_constant(constants, self.task.metric.name, majority)
        if top is None:
            return dict(constant_baselines=None, selected_vs_constant=None)
        by_label = {label: stats.summary(e) for label, e in constants.items()}
        return dict(
            constant_baselines={"best": top, "majority_label": majority, "by_label": by_label},
            selected_vs_constant=stats.paired(selected, constants[top]),
        )

    def attribution(self, records: dict[str, dict], selected: str, initial: str) -> dict:
        """Edit attribution of the selected prompt (``run/attribution.py``) on the true validation rows and the
        test rows."""
        return attr.compute(
            self.scorer, self.task, records, selected, initial, self.splits.validation, self.splits.test
        )

    def pick(self, beam: list[Candidate], on_validation: dict[str, dict], initial: str) -> tuple[str, dict | None, str]:
        """The selected prompt (``selection.pick``), the pick's record and how it was chosen: by default the
        best prompt on the validation rows by the selection's reward (F1-type metrics: balanced accuracy), the
        initial prompt competing with the final beam (``selection.final_pick: guarded``; ties go to the beam, in
        its order, the initial prompt last), or with ``final_pick: reference`` the best final beam prompt by the
        task's metric; without validation rows the top selection estimate; or the beam's shortest prompt within
        the CI of the best estimate. ``final_pick: method`` picks nothing: the method's own final prompt (the
        final beam's first: the acceptance rule's choice), the guarded pick recorded beside it."""
        n_validation, texts = len(self.splits.selection_validation), [c.text for c in beam]
        if self.cfg.selection.pick == "estimate":
            if self.cfg.selection.final_pick == "method":
                beside = guarded_beside(on_validation, texts, initial, n_validation)
                return beam[0].text, beside, "the method's own final prompt (the final beam's first)"
            if not on_validation:
                return beam[0].text, None, "selection estimate"
            key = REWARD if self.cfg.selection.final_pick == "guarded" else self.task.metric.name
            best, how = pick_on_validation(on_validation, key, texts, initial, n_validation)
            return best, None, how
        tokens = prompt_tokens(self.task, self.scorer.engine, texts)
        i = shortest_within_ci(
            [c.estimate for c in beam], [c.pulls for c in beam], tokens, reward_scale(self.scorer.reward_weights)
        )
        record = {
            "rule": "shortest-within-ci",
            "selected_id": beam[i].id,
            "beam": [[c.id, c.estimate, c.pulls, t] for c, t in zip(beam, tokens)],
        }
        return beam[i].text, record, "shortest within the CI of the best estimate"


def _beam_row(c: Candidate, on_validation: dict[str, dict], test: float) -> dict:
    return dict(id=c.id, text=c.text, estimate=c.estimate, validation=on_validation.get(c.text), test=test)
