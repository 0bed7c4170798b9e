"""Automatic Behavior Optimization (ABO; Ma et al., 2024, *Are LLMs good prompt optimizers?*): the prompt form.

The instruction is an ordered list of explicit steps plus a demonstration of following them on one
example (or, with ``abo.demonstration: false``, the line "Follow the steps strictly." instead)::

    Follow these steps:
    1. ...
    2. ...

    Demonstration:
    Step 1: ...

One round, per beam prompt (each step one batched engine call for the whole beam):

1. a prompt that is not in this form yet (the task's instruction in round 1) is turned into steps +
   demonstration by one optimizer call ("write explicit steps, demonstrate them on this example"),
   ``abo.init_samples`` samples; ``search.initial_prompt`` can give a ready one instead;
2. otherwise the prompt is scored on the round's minibatch (the usual scorer: label log-probs);
   on the wrong examples the target is run in generate mode with a request to show its work step by
   step ("Step 1: ...");
3. ``first_failed_step`` finds, per wrong example, the first step whose "Step i" marker is missing,
   or whose content is empty or a refusal ("skip", "cannot", "not sure", ...); a wrong answer that
   followed every step blames the last step (the one that produces the answer);
4. the most often blamed step is revised by the optimizer (``abo.revise_samples`` samples, each shown a
   seeded subset of the examples that failed there), then the demonstration is rewritten for the
   new steps; the prompt is reassembled with every other step unchanged.

Limitations (kept simple and honest): step compliance is a string heuristic on the target's own
narration, not a check of the reasoning; the task template's fixed sections (e.g. "Label:") may keep
a small target from narrating steps at all, in which case step 1 is blamed every time; correctness
comes from the scorer (logprobs), not from the narrated answer. No paraphrase successors (they would
break the step structure); selection is unchanged (bandit, or ``selection.acceptance``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass


HEADER = "Follow these steps:"
STRICT = "Follow the steps strictly."
SHOW_WORK = ('Follow the steps above one by one and show your work, one line per step '
             '("Step 1: ...", "Step 2: ..."), then give the label.')

_STEP_LINE = re.compile(r"^\s*(?:step\s*)?(\d{1,2})\s*[.):]\s*(.+?)\s*$", re.IGNORECASE)
_DEMO = re.compile(r"^\s*\**\s*demonstration\s*\**\s*:?\s*\**\s*(.*)$", re.IGNORECASE)
_MARKER = re.compile(r"(?:\bstep\s*(\d{1,2})\b\s*[:.)\-]?|^[ \t]*(\d{1,2})[.)][ \t])", re.IGNORECASE | re.MULTILINE)
_REFUSAL = re.compile(r"\b(?:skip(?:ped|ping)?|not applicable|n/a|cannot|can't|unable to|don't know|not sure|no idea)\b",
                      re.IGNORECASE)


@dataclass
class AboPrompt:
    steps: list[str]
    demonstration: str | None


def parse_abo(text: str) -> AboPrompt:
    """Numbered step lines before an optional "Demonstration:" line; the rest is the demonstration."""
    steps: list[str] = []
    demo_lines: list[str] | None = None
    for line in text.splitlines():
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
    return [p for p in parts if p != STRICT and p != HEADER][:limit]


def format_abo(steps: list[str], demonstration: str | None, with_demo: bool = True) -> str:
    lines = [HEADER] + [f"{i}. {s}" for i, s in enumerate(steps, 1)]
    if with_demo and demonstration:
        return "\n".join(lines) + "\n\nDemonstration:\n" + demonstration.strip()
    if not with_demo:
        return "\n".join(lines) + "\n\n" + STRICT
    return "\n".join(lines)


def numbered(steps: list[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))


def first_failed_step(steps: list[str], output_text: str) -> int | None:
    """1-based index of the first step the output did not follow, or None if it followed all of them.

    A step fails when its marker ("Step i" or a line starting "i." / "i)") is missing, when the text
    after the marker (up to the next marker) is empty, or when it is a refusal ("skip", "cannot", ...)."""
    found: dict[int, tuple[int, int]] = {}
    marks = []
    for m in _MARKER.finditer(output_text):
        n = int(m.group(1) or m.group(2))
        marks.append((m.start(), m.end()))
        found.setdefault(n, (m.start(), m.end()))
    for i in range(1, len(steps) + 1):
        if i not in found:
            return i
        _, end = found[i]
        nxt = min((s for s, _ in marks if s >= end), default=len(output_text))
        content = output_text[end:nxt].strip(" \t\r\n:.-*")
        if not content or _REFUSAL.search(content):
            return i
    return None


def blamed_step(steps: list[str], outputs: list[str]) -> tuple[int, list[int]]:
    """The step to revise (most often first-failed, ties to the earliest) and the per-output blame."""
    blame = [first_failed_step(steps, o) or len(steps) for o in outputs]
    counts = Counter(blame)
    step = min(counts, key=lambda s: (-counts[s], s))
    return step, blame


def strip_marker(text: str, step: int) -> str:
    text = " ".join(text.split())
    return re.sub(rf"^(?:step\s*{step}\b|{step})\s*[.):\-]?\s*", "", text, flags=re.IGNORECASE).strip()
