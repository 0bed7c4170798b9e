"""What the optimizer is shown: the ``Feedback`` protocol and the one shipped implementation.

``MinibatchFeedback`` scores every beam parent on the round's seeded training minibatch (one target
batch) and shows, per parent, rows picked by two strategies (``views.py``): which labels (true or
wrong) and which rows (real errors, pseudo errors, or every row without evaluation). Label corruption
itself is pure and seeded (``corruption.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from apo_local.config.schema import FeedbackConfig
from apo_local.search.feedback.corruption import (
    corrupt_examples,
    corrupt_label,
    corrupt_value,
    is_numeric_task,
    pseudo_errors,
    real_errors,
    with_label,
)
from apo_local.search.feedback.views import PseudoErrors, RealErrors, TrueLabels, Unevaluated, WrongLabels
from apo_local.search.meta_prompts import MetaPrompts
from apo_local.search.state import Candidate
from apo_local.search.streams import Streams
from apo_local.tasks import Example, Task
from apo_local.tasks.judge import judge_of

__all__ = [
    "Feedback",
    "MinibatchFeedback",
    "make_feedback",
    "corrupt_examples",
    "corrupt_label",
    "corrupt_value",
    "is_numeric_task",
    "pseudo_errors",
    "real_errors",
    "with_label",
]

Pools = dict[str, list[tuple[Example, "str | None"]]]


class Feedback(Protocol):
    evaluated: bool  # whether the rows say what is right (selects the error-block template)

    def shown(self, ex: Example) -> Example:
        """The example as the optimizer sees it (its label possibly corrupted)."""

    def pools(self, parents: list[Candidate], streams: Streams) -> Pools:
        """Per parent id: the (example, prediction) rows the optimizer may be shown this round."""

    def groups(
        self, parents: list[Candidate], streams: Streams, n_groups: int, rows_per_group: int
    ) -> list[tuple[Candidate, str]]:
        """(parent, rendered example block) groups: ``n_groups`` per parent that has rows."""

    def block(self, rows: Sequence[tuple[Example, str | None]]) -> str:
        """The rendered example block."""


class MinibatchFeedback:
    def __init__(
        self,
        task: Task,
        train: list[Example],
        scorer,
        trace,
        meta: MetaPrompts,
        minibatch_size: int,
        labels,
        rows,
    ):
        self.task, self.train, self.scorer, self.trace, self.meta = task, train, scorer, trace, meta
        self.minibatch_size, self.labels, self.rows = minibatch_size, labels, rows

    @property
    def evaluated(self) -> bool:
        return self.rows.evaluated

    def shown(self, ex: Example) -> Example:
        return self.labels.shown(ex)

    def pools(self, parents: list[Candidate], streams: Streams) -> Pools:
        minibatch = streams.rng("minibatch").sample(self.train, min(self.minibatch_size, len(self.train)))
        self.trace.at("minibatch", streams.round)
        preds = self.scorer.predict([(p.text, ex) for p in parents for ex in minibatch])
        shown = [self.shown(ex) for ex in minibatch]
        if judge := judge_of(self.task):  # graded against the labels shown, in one judge batch
            judge.grade([(pr.label, ex.label) for ex, pr in zip(shown * len(parents), preds)])
        pools = {}
        for k, parent in enumerate(parents):
            chunk = preds[k * len(minibatch) : (k + 1) * len(minibatch)]
            rows = [(ex, pr.label, self.task.metric.example_score(pr.label, ex.label)) for ex, pr in zip(shown, chunk)]
            pools[parent.id] = self.rows.select(rows)
        return pools

    def groups(self, parents, streams, n_groups, rows_per_group):
        pools = self.pools(parents, streams)
        groups = []
        for parent in parents:
            pool = pools[parent.id]
            rng = streams.rng("errors", parent.id)
            for _ in range(n_groups if pool else 0):
                groups.append((parent, self.block(rng.sample(pool, min(len(pool), rows_per_group)))))
        if parents and not groups:
            self.trace.event("no_errors", detail="no minibatch feedback rows: no updates this round")
        return groups

    def block(self, rows):
        judge = judge_of(self.task) if self.evaluated else None
        notes = judge.reasons([(pred, ex.label) for ex, pred in rows]) if judge else None  # the judge's reasons
        return self.meta.errors(rows, evaluated=self.evaluated, notes=notes)


def make_feedback(
    cfg: FeedbackConfig,
    task: Task,
    seed: int,
    train: list[Example],
    scorer,
    trace,
    meta: MetaPrompts,
    minibatch_size: int,
) -> MinibatchFeedback:
    labels = TrueLabels() if cfg.labels == "true" else WrongLabels(task, seed, cfg.numeric_offset)
    if not cfg.show_evaluation:
        rows = Unevaluated()
    elif cfg.errors == "pseudo":
        rows = PseudoErrors(task, seed, cfg.numeric_offset)
    else:
        rows = RealErrors()
    return MinibatchFeedback(task, train, scorer, trace, meta, minibatch_size, labels, rows)
