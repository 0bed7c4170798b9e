"""The two feedback ablation axes, one small strategy each.

* labels shown to the optimizer: ``TrueLabels`` or ``WrongLabels`` (``feedback.labels``);
* rows shown per prompt: ``RealErrors``, ``PseudoErrors`` (``feedback.errors: pseudo``; Ma et al., 2024)
  or ``Unevaluated`` (``feedback.show_evaluation: false``: every row, without correctness; Melcer et al., 2025).
"""

from __future__ import annotations

from collections.abc import Sequence

from apo_local.search.feedback.corruption import corrupt_label, pseudo_errors, real_errors, with_label
from apo_local.tasks import Example, Task

Row = tuple[Example, "str | None", float]  # (example as shown, prediction, score against the shown label)


class TrueLabels:
    def shown(self, ex: Example) -> Example:
        return ex


class WrongLabels:
    """Every example shown with its seeded wrong label (the same one in every round and on resume)."""

    def __init__(self, task: Task, seed: int, numeric_offset: float):
        self.task, self.seed, self.numeric_offset = task, seed, numeric_offset
        self._shown: dict[str, Example] = {}

    def shown(self, ex: Example) -> Example:
        if ex.id not in self._shown:
            self._shown[ex.id] = with_label(ex, corrupt_label(ex, self.task, self.seed, self.numeric_offset))
        return self._shown[ex.id]


class RealErrors:
    evaluated = True

    def select(self, rows: Sequence[Row]) -> list[tuple[Example, str | None]]:
        return real_errors(rows)


class PseudoErrors:
    """The correct rows, each shown with a flipped prediction."""

    evaluated = True

    def __init__(self, task: Task, seed: int, numeric_offset: float):
        self.task, self.seed, self.numeric_offset = task, seed, numeric_offset

    def select(self, rows: Sequence[Row]) -> list[tuple[Example, str | None]]:
        return pseudo_errors(rows, self.task, self.seed, self.numeric_offset)


class Unevaluated:
    """Every row: inputs and outputs, not which are right."""

    evaluated = False

    def select(self, rows: Sequence[Row]) -> list[tuple[Example, str | None]]:
        return [(ex, pred) for ex, pred, _ in rows]
