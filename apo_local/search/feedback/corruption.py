"""Label corruption for the "textual gradients" ablations: pure, seeded, reproducible.

Melcer et al. (2025), *Textual gradients are a flawed metaphor*, show the optimizer wrong labels
(or no evaluation at all) to test whether it reads the feedback; Ma et al. (2024), *Are LLMs good
prompt optimizers?*, show it fabricated errors ("pseudo errors"). Everything here is a pure
function of (example, task, seed): the same example is always corrupted the same way, in every
round and on resume.

* binary classification: the other label;
* multi-class: a fixed other class per example (chosen by a seeded hash of the example id);
* numeric tasks (metric ``numeric_match``): true value + a uniform offset in [-k, k], never 0
  (integers stay integers: a nonzero integer offset in [-k, k]).

Any other generation task has no meaningful "wrong label": ``corrupt_label`` refuses it.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

from apo_local.support.errors import ApoError
from apo_local.tasks import Example
from apo_local.tasks.metrics import parse_number


def _rng(seed: int, *key) -> random.Random:
    digest = hashlib.sha256("|".join(map(str, (seed, *key))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def is_numeric_task(task) -> bool:
    return task.kind != "classification" and getattr(task.metric, "name", "") == "numeric_match"


def corrupt_value(value: str, example_id: str, task, seed: int, numeric_offset: float = 5.0) -> str:
    """A wrong version of ``value`` (a label or a prediction) for the example ``example_id``."""
    if task.kind == "classification":
        others = [label for label in task.labels if label != value]
        if not others:
            raise ApoError(f"task {task.name}: no other label to corrupt {value!r} into")
        if len(task.labels) == 2 and value in task.labels:
            return others[0]
        return others[_rng(seed, "label", example_id).randrange(len(others))]
    if is_numeric_task(task):
        number = parse_number(value)
        if number is None:
            raise ApoError(f"task {task.name}: label {value!r} of {example_id} is not a number")
        rng = _rng(seed, "offset", example_id)
        k = float(numeric_offset)
        if number == int(number) and k >= 1 and "." not in value:
            offset = rng.choice([d for d in range(-int(k), int(k) + 1) if d != 0])
            return str(int(number) + offset)
        offset = 0.0
        while offset == 0.0:
            offset = rng.uniform(-k, k)
        return f"{number + offset:.6g}"
    raise ApoError(
        f"task {task.name}: wrong labels need a classification or numeric_match task "
        f"(metric {getattr(task.metric, 'name', '?')})"
    )


def corrupt_label(example: Example, task, seed: int, numeric_offset: float = 5.0) -> str:
    """The wrong label shown for ``example`` (binary: flipped; multi-class: a fixed other class;
    numeric: true value + a seeded offset in ±``numeric_offset``)."""
    return corrupt_value(example.label, example.id, task, seed, numeric_offset)


def with_label(example: Example, label: str) -> Example:
    return Example(id=example.id, input=example.input, label=label)


def corrupt_examples(examples: Sequence[Example], task, seed: int, numeric_offset: float = 5.0) -> list[Example]:
    """The same examples (same ids) with corrupted labels."""
    return [with_label(ex, corrupt_label(ex, task, seed, numeric_offset)) for ex in examples]


def pseudo_errors(
    rows: Sequence[tuple[Example, str | None, float]], task, seed: int, numeric_offset: float = 5.0
) -> list[tuple[Example, str]]:
    """Ma et al.'s pseudo errors: the CORRECT rows (score 1; a graded score: at least one half), each shown with a flipped prediction.

    ``rows`` are (example as shown, prediction, score against the shown label)."""
    return [
        (ex, corrupt_value(ex.label, ex.id, task, seed + 7919, numeric_offset))
        for ex, _pred, score in rows
        if score >= 0.5 and not math.isnan(score)
    ]


def real_errors(rows: Sequence[tuple[Example, str | None, float]]) -> list[tuple[Example, str | None]]:
    """The rows the prompt got wrong (score 0 against the shown label; a graded score: below one half)."""
    return [(ex, pred) for ex, pred, score in rows if score < 0.5]
