"""Constant baselines: what a prompt that always gives the same answer scores on the same test rows.

A classification prompt that shifts its answers toward one label can raise an F1-type metric while the
classifier gets no better; the constant answers bound what "no skill" scores on these rows. For every label
of the task, "always answer this label" is scored on the test rows (no engine: the prediction is known), and
the majority label of the training split is named (the constant a user would deploy without a model). The
best constant on the task metric is the bar the selected prompt must clear (``run/headline.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from apo_local.scoring import Evaluation, Prediction, make_evaluation
from apo_local.tasks import Example, Task


def constant_instruction(label: str) -> str:
    """How a constant baseline is named where a prompt would be (tables, reports)."""
    return f"(always answers {label!r})"


def constant_evaluations(task: Task, rows: Sequence[Example]) -> dict[str, Evaluation]:
    """label -> the evaluation of always answering it on ``rows`` ({} for a task without a label set)."""
    if task.kind != "classification" or not task.labels or not rows:
        return {}
    return {
        label: make_evaluation(task, constant_instruction(label), [Prediction(label)] * len(rows), rows)
        for label in task.labels
    }


def majority_label(task: Task, train: Sequence[Example]) -> str | None:
    """The training split's most frequent label (ties: the task's label order)."""
    counts = Counter(ex.label for ex in train)
    if not counts:
        return None
    order = list(task.labels or counts)
    return max(order, key=lambda label: (counts.get(label, 0), -order.index(label)))


def best_constant(evaluations: dict[str, Evaluation], metric: str, majority: str | None) -> str | None:
    """The constant with the highest task metric on the rows (ties: the training majority, then label order)."""
    if not evaluations:
        return None
    order = list(evaluations)
    return max(order, key=lambda label: (evaluations[label].metrics[metric], label == majority, -order.index(label)))
