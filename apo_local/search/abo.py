"""Automatic Behavior Optimization (ABO; Ma et al., 2024, *Are LLMs good prompt optimizers?*).

The instruction is an ordered list of explicit steps plus a demonstration of following them on one
example (or, with ``search.demonstration: false``, the line "Follow the steps strictly." instead)::

    Follow these steps:
    1. ...
    2. ...

    Demonstration:
    Step 1: ...

One round, per beam prompt (each step one batched engine call for the whole beam):

1. a prompt that is not in this form yet (the task's instruction in round 1) is turned into steps +
   demonstration by one optimizer call ("write explicit steps, demonstrate them on this example"),
   ``n_gradients`` samples; ``search.initial_prompt`` can give a ready one instead;
2. otherwise the prompt is scored on the round's minibatch (the usual scorer: label log-probs);
   on the wrong examples the target is run in generate mode with a request to show its work step by
   step ("Step 1: ...");
3. ``first_failed_step`` finds, per wrong example, the first step whose "Step i" marker is missing,
   or whose content is empty or a refusal ("skip", "cannot", "not sure", ...); a wrong answer that
   followed every step blames the last step (the one that produces the answer);
4. the most often blamed step is revised by the optimizer (``n_gradients`` samples, each shown a
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

from apo_local.engine import GenerationRequest
from apo_local.search.candidates import Candidate
from apo_local.search.context import SearchContext

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


def _strip_marker(text: str, step: int) -> str:
    text = " ".join(text.split())
    return re.sub(rf"^(?:step\s*{step}\b|{step})\s*[.):\-]?\s*", "", text, flags=re.IGNORECASE).strip()


class ABOProposer:
    name = "abo"

    def propose(self, parents: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        parsed = [(p, parse_abo(p.text)) for p in parents]
        fresh = [p for p, a in parsed if not a.steps]
        ready = [(p, a) for p, a in parsed if a.steps]
        return ctx.admit_and_cap(self._initial(fresh, ctx) + self._revise(ready, ctx), parents)

    # -- 1. steps + demonstration from a plain instruction ----------------------------------------

    def _initial(self, parents: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        if not parents:
            return []
        s = ctx.cfg.search
        ex = ctx.shown(ctx.rng("abo-demo").choice(ctx.train))
        replies = ctx.ask("abo_init", [
            ctx.meta.render("abo_init", prompt=p.text, input=ex.input.strip(), label=ex.label,
                            demonstration=s.demonstration) for p in parents
        ], n=max(1, s.n_gradients))
        out = []
        for parent, reply in zip(parents, replies):
            for text in reply.texts:
                for item in ctx.parse(text, "abo_init")[:1]:
                    a = parse_abo(item)
                    steps = a.steps or fallback_steps(item)
                    if steps:
                        out.append(Candidate(format_abo(steps, a.demonstration, s.demonstration), ctx.round,
                                             "abo-init", parent=parent.id))
        return out

    # -- 2-4. find the first failed step, revise it (and the demonstration) -----------------------

    def _revise(self, ready: list[tuple[Candidate, "AboPrompt"]], ctx: SearchContext) -> list[Candidate]:
        if not ready:
            return []
        s = ctx.cfg.search
        _, pools = ctx.feedback_pool([p for p, _ in ready])
        per_parent = s.errors_per_gradient * max(1, s.n_gradients)
        work_rows = []  # (parent, abo, example, prediction)
        for parent, a in ready:
            pool = pools[parent.id]
            for ex, pred in ctx.rng("abo-work", parent.id).sample(pool, min(len(pool), per_parent)):
                work_rows.append((parent, a, ex, pred))
        if not work_rows:
            ctx.trace.event("no_errors", detail="abo: no minibatch errors: no revisions this round")
            return []
        ctx.trace.at("abo_work", ctx.round)
        gens = ctx.scorer.engine.generate([
            GenerationRequest(ctx.task.render(parent.text + "\n\n" + SHOW_WORK, ex), temperature=0.0,
                              max_tokens=s.abo_work_tokens)
            for parent, _, ex, _ in work_rows
        ])
        asks = []  # (parent, abo, step, rows)
        for parent, a in ready:
            mine = [(ex, pred, g.text) for (p, _, ex, pred), g in zip(work_rows, gens) if p.id == parent.id]
            if not mine:
                continue
            step, blame = blamed_step(a.steps, [w for _, _, w in mine])
            failed = [row for row, b in zip(mine, blame) if b == step]
            rng = ctx.rng("abo-errors", parent.id)
            for _ in range(max(1, s.n_gradients)):
                rows = rng.sample(failed, min(len(failed), s.errors_per_gradient))
                asks.append((parent, a, step, rows, f"step {step} was the first step not followed on "
                                                    f"{len(failed)} of {len(mine)} wrong examples: {a.steps[step - 1]}"))
        replies = ctx.ask("abo_revise", [
            ctx.meta.render("abo_revise", steps=numbered(a.steps), step=step, step_text=a.steps[step - 1],
                            errors=ctx.example_block([(ex, f"{pred or '(no answer)'}\nWork: {' '.join(work.split())[:400]}")
                                                      for ex, pred, work in rows]))
            for _, a, step, rows, _ in asks
        ])
        revised = []
        for (parent, a, step, rows, why), reply in zip(asks, replies):
            for item in ctx.parse(reply.text, "abo_revise")[:1]:
                new_step = _strip_marker(item, step)
                if new_step:
                    steps = list(a.steps)
                    steps[step - 1] = new_step
                    revised.append((parent, a, steps, rows, why))
        demos: list[str | None] = [a.demonstration for _, a, _, _, _ in revised]
        if s.demonstration and revised:
            replies = ctx.ask("abo_demo", [
                ctx.meta.render("abo_demo", steps=numbered(steps), input=rows[0][0].input.strip(), label=rows[0][0].label)
                for _, _, steps, rows, _ in revised
            ])
            for i, reply in enumerate(replies):
                items = ctx.parse(reply.text, "abo_demo")[:1]
                if items:
                    demos[i] = items[0]
        return [
            Candidate(format_abo(steps, demo, s.demonstration), ctx.round, "abo", parent=parent.id, gradient=why)
            for (parent, _, steps, _, why), demo in zip(revised, demos)
        ]
