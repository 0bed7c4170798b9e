"""The shapes of the optimizer replies that have one: guided decoding makes the reply match it whole.

Each optimizer step declares its reply's shape where it asks (``OptimizerCalls.ask(..., shape=...)``);
``optimizer.guided: false`` asks for free text everywhere (the ablation), and replies are then parsed
leniently as before. Free-text steps (paraphrases, critiques) declare none. Every shape is a regular
expression over the whole reply, so both backends take it (vLLM structured outputs; the transformers
backend's xgrammar mask).

Item text excludes ``<`` and ``>`` (no nested tags) and starts with a non-space character; it is not
bounded in length: a reply that runs out of tokens inside an item is truncated, and a truncated reply
is rejected (``OptimizerCalls``), never cut short into a candidate.
"""

from __future__ import annotations

from apo_local.engine.protocol import ReplyShape

ITEM = r"[^<>\s][^<>]*"  # one item's text: anything but tags, not blank
LINE = r"[^<>\s][^<>\n]*"  # one item on one line


def tagged(k: int = 1, *, one_line: bool = False) -> ReplyShape:
    """Exactly ``k`` items, each wrapped in ``<START>`` ... ``<END>``, one per line, nothing around them."""
    body = LINE if one_line else ITEM
    item = f"<START>{body}<END>"
    return ReplyShape("regex", item + (rf"(?:\n{item}){{{k - 1}}}" if k > 1 else ""))


def abo_steps(demonstration: bool, max_steps: int = 8) -> ReplyShape:
    """One tagged instruction in ABO's form: numbered step lines "1. ...", "2. ...", ... (1 to
    ``max_steps``, numbered in order), then, with ``demonstration``, a "Demonstration:" section."""
    steps = ""
    for i in range(max_steps, 1, -1):  # "1. a(\n2. b(\n3. c)?)?": the numbers can only count up
        steps = rf"(?:\n{i}\. {LINE}{steps})?"
    steps = rf"1\. {LINE}{steps}"
    demo = rf"\n\nDemonstration:\n{ITEM}" if demonstration else ""
    return ReplyShape("regex", rf"<START>{steps}{demo}<END>")


def choice(options: list[str]) -> ReplyShape:
    """One of ``options``, verbatim (a judgement: "yes" / "no", a step number, ...)."""
    return ReplyShape("choice", "\n".join(options))
