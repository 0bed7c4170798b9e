"""Automatic Behavior Optimization (ABO; Ma et al., 2024, *Are LLMs good prompt optimizers?*): the prompt form.

The instruction is an ordered list of explicit steps plus a demonstration of following them on one
example (or, with ``abo.demonstration: false``, the line "Follow the steps strictly." instead)::

    Follow these steps:
    1. ...
    2. ...

    Demonstration:
    Step 1: ...

    Work through the steps one by one, one line per step ("Step 1: ..."), then end with one last line "Answer: <label>".

The last line (``WORK``, with ``abo.answer: generate``) is fixed, outside what the optimizer edits: it asks the
target to execute the steps and to answer on an explicit final line, which is all that is read
(``tasks/answers.py``, ``final-line``): a label word inside the work is no answer, and a reply cut at
``abo.work_tokens`` before that line is unparsed and counted (the ``answer_truncated`` fault).

One round, per beam prompt (each step one batched engine call for the whole beam):

1. a prompt that is not in this form yet (the task's instruction in round 1) is turned into steps +
   demonstration by one optimizer call ("write explicit steps, demonstrate them on this example"),
   ``abo.init_samples`` samples; ``search.initial_prompt`` can give a ready one instead;
2. otherwise the prompt is scored on the round's minibatch. With ``abo.answer: generate`` (the paper)
   the target executes the steps: it writes its work and then the label on a final ``Answer:`` line, the
   only line read; every score of the run (minibatch, selection, test)
   is made this way, so the selected prompt is the one whose executed steps answer best. With
   ``abo.answer: logprobs`` (an ablation, not the paper) the label's log-prob scores the prompt, the
   steps are never run for the score, and the target is asked separately to narrate its work on the
   wrong examples;
3. per wrong example the optimizer model judges, step by step, whether the target's work followed each
   step (``abo_check``; the reply is read by ``parse_judgement``: the first step judged "no"); a wrong
   answer that followed every step blames the last step (the one that produces the answer); an
   unreadable judgement is counted as a parse failure and left out;
4. the most often blamed step is revised by the optimizer (``abo.revise_samples`` samples, each shown a
   seeded subset of the examples that failed there), then the demonstration is rewritten for the
   new steps; the prompt is reassembled with every other step unchanged.

Limitations: the judgement is only as good as the optimizer model (a small one often answers "yes"
to every step, which blames the last step); the task template's fixed sections (e.g. "Label:") may keep
a small target from writing its work at all, which the judge then sees. No paraphrase successors (they
would break the step structure); selection is unchanged (bandit, or ``selection.acceptance``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

HEADER = "Follow these steps:"
STRICT = "Follow the steps strictly."
WORK = (
    'Work through the steps one by one, one line per step ("Step 1: ..."), then end with one last line '
    '"Answer: <label>".'
)
FIXED = (STRICT, WORK)  # lines format_abo adds, never part of the steps or the demonstration
SHOW_WORK = (
    "Follow the steps above one by one and show your work, one line per step "
    '("Step 1: ...", "Step 2: ..."), then give the label.'
)

_STEP_LINE = re.compile(r"^\s*(?:step\s*)?(\d{1,2})\s*[.):]\s*(.+?)\s*$", re.IGNORECASE)
_DEMO = re.compile(r"^\s*\**\s*demonstration\s*\**\s*:?\s*\**\s*(.*)$", re.IGNORECASE)
_VERDICT = re.compile(r"\bstep\s*(\d{1,2})\b[^\n]*?\b(yes|no|not followed|followed)\b", re.IGNORECASE)


@dataclass
class AboPrompt:
    steps: list[str]
    demonstration: str | None


def parse_abo(text: str) -> AboPrompt:
    """Numbered step lines before an optional "Demonstration:" line; the rest is the demonstration."""
    steps: list[str] = []
    demo_lines: list[str] | None = None
    for line in text.splitlines():
        if line.strip() in FIXED:
            continue
        if demo_lines is not None:
            demo_lines.append(line)
            continue
        m = _DEMO.match(line)
        if m:
            demo_lines = [m.group(1)] if m.group(1).strip() else []
            continue
        m = _STEP_LINE.match(line)
        if m and m.group(2).strip():
            steps.append(m.group(2).strip())
    demo = "\n".join(demo_lines).strip() if demo_lines is not None else None
    return AboPrompt(steps, demo or None)


def fallback_steps(text: str, limit: int = 6) -> list[str]:
    """Steps from free text that has no numbered lines: its sentences (at most ``limit``)."""
    lines = text.splitlines()
    cut = next((i for i, line in enumerate(lines) if _DEMO.match(line)), len(lines))
    text = "\n".join(lines[:cut])
    parts = [p.strip(" -*\t") for p in re.split(r"(?<=[.!?])\s+|\n+", text) if p.strip(" -*\t")]
    return [p for p in parts if p not in FIXED and p != HEADER][:limit]


def format_abo(steps: list[str], demonstration: str | None, with_demo: bool = True, work: bool = False) -> str:
    """The prompt: steps, then the demonstration (or ``STRICT``), then with ``work`` the ``WORK`` line."""
    text = "\n".join([HEADER] + [f"{i}. {s}" for i, s in enumerate(steps, 1)])
    if with_demo and demonstration:
        text += "\n\nDemonstration:\n" + demonstration.strip()
    elif not with_demo:
        text += "\n\n" + STRICT
    return text + ("\n\n" + WORK if work else "")


def numbered(steps: list[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))


def parse_judgement(text: str, n_steps: int) -> int | None:
    """The optimizer's step-by-step judgement -> the first step judged not followed, 0 when every judged
    step was followed, None when no step verdict can be read. One verdict line per step:
    "Step 2: no" (or "... not followed"); the first verdict of a step counts."""
    verdicts: dict[int, bool] = {}
    for m in _VERDICT.finditer(text):
        step = int(m.group(1))
        if 1 <= step <= n_steps and step not in verdicts:
            verdicts[step] = m.group(2).lower() in ("yes", "followed")
    if not verdicts:
        return None
    return min((s for s, ok in verdicts.items() if not ok), default=0)


def blamed_step(n_steps: int, first_failed: list[int]) -> tuple[int, list[int]]:
    """The step to revise (most often first-failed, ties to the earliest) and the per-example blame
    (0, every step followed, blames the last step)."""
    blame = [f or n_steps for f in first_failed]
    counts = Counter(blame)
    step = min(counts, key=lambda s: (-counts[s], s))
    return step, blame


def strip_marker(text: str, step: int) -> str:
    text = " ".join(text.split())
    return re.sub(rf"^(?:step\s*{step}\b|{step})\s*[.):\-]?\s*", "", text, flags=re.IGNORECASE).strip()
