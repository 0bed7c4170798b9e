"""How a generated reply is read as an answer (``Scorer(answer=...)``; a run picks it with
``target_answer(cfg).reading``, search/proposers):

* ``label`` (the default): ``task.parse_answer``, the label the reply names first;
* ``positive-prefix``: the ProTeGi reference's reading (microsoft/LMOps prompt_optimization, ``BinaryPredictor``:
  a 4-token generation, ``1 if response.strip().upper().startswith('YES') else 0``): the task's positive
  label when the stripped reply starts with it, case-insensitive, else the other label. Never unparsed: an
  empty or off-topic reply is the negative label, as in the reference. Binary classification tasks with a
  ``positive_label`` only;
* ``final-line``: a reply that works through steps first (ABO, Ma et al., 2024) answers on an explicit
  final answer line, ``Answer: <label>``; the last such line is read (``task.parse_answer`` on what follows
  "Answer:"). A reply without one is unparsed: a label word inside the work ("... yes, they often
  exaggerate") is no answer. A reply cut at its token budget is unparsed too (the scorer counts it).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from apo_local.support.errors import ApoError

READINGS = ("label", "positive-prefix", "final-line")
ANSWER_LINE = re.compile(r"^[\s*_#>-]*(?:final\s+)?answer[\s*_]*[:=][\s*_]*(.*?)[\s*_.]*$", re.IGNORECASE)
FINAL_LINE_ASK = 'then end with one last line "Answer: <label>"'


def final_line_answer(task, text: str) -> str | None:
    """The answer on the reply's last ``Answer: ...`` line, parsed by the task; None without one."""
    for line in reversed(text.splitlines()):
        m = ANSWER_LINE.match(line)
        if m:
            return task.parse_answer(m.group(1)) if m.group(1).strip() else None
    return None


def positive_prefix_answer(task, text: str) -> str:
    """The reference's reading: the positive label if the reply starts with it (case-insensitive), else the
    other label."""
    positive, negative = binary_labels(task)
    return positive if text.strip().upper().startswith(positive.upper()) else negative


def binary_labels(task) -> tuple[str, str]:
    """(positive, negative) of a binary classification task; one ``error:`` line for any other task."""
    labels = tuple(getattr(task, "labels", ()) or ())
    positive = getattr(task, "positive_label", None)
    if getattr(task, "kind", None) != "classification" or len(labels) != 2 or positive not in labels:
        raise ApoError(
            f"scoring.parse: positive-prefix needs a binary classification task with a positive_label "
            f"(task {getattr(task, 'name', '?')} has labels {list(labels)}, positive_label {positive})"
        )
    return positive, next(label for label in labels if label != positive)


def answer_reader(task, reading: str) -> Callable[[str], str | None]:
    """reply text -> answer, for ``reading`` (one of ``READINGS``)."""
    if reading == "label":
        return task.parse_answer
    if reading == "positive-prefix":
        binary_labels(task)  # refused now, before any engine call
        return lambda text: positive_prefix_answer(task, text)
    if reading == "final-line":
        return lambda text: final_line_answer(task, text)
    raise ApoError(f"unknown answer reading {reading!r} (use {', '.join(READINGS)})")
