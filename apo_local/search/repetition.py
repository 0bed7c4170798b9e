"""Loops in optimizer replies: a small model that starts repeating itself is stopped, and the loop is cut.

A looping reply is not thrown away: the text before the loop is kept and the loop is cut off (counted as
``replies_cut_repetition``, logged in the trace as ``reply_cut_repetition`` with its reason). Two parts:

* **stop** (``REPEAT_STOP``): every optimizer request asks the engine to end a sample whose last block of
  8 to 64 tokens equals the block before it (vLLM's ``repetition_detection``; the same rule in the
  transformers backend); the sample's finish reason is then ``repetition``, so a loop costs a few dozen
  tokens, not the rest of the budget;
* **cut** (``cut_loop``: pure text, any backend, any finish reason): inside each item (the text between
  tags, or the whole reply when it has none) the loop starts at the first

  - **repeated sentence**: a sentence of 3+ words equal (in its words) to an earlier one in the item,
    split as candidate hygiene splits them (``search/hygiene.py``), so what is kept passes hygiene's
    "repeated sentence" rule;
  - **repeated phrase**: 3+ words said again right after themselves ("the label of the statement the
    label of the statement"), or 1 or 2 words four times in a row;
  - for a sample the engine stopped: a **repeated tail**, the text ends in 2+ copies of one unit (what
    the engine saw repeating) covering 12+ characters; tried on the last item, then across items.

  The item is cut where the repeated copy starts (one copy is kept); a dangling list number, bullet or
  "Step 2:" left at the cut is dropped, and an item the reply ended in is closed with ``<END>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from apo_local.search.hygiene import (
    MIN_WORDS,
    SENTENCE_END,  # split and keyed as hygiene's repeated-sentence rule
    WORD,
)
from apo_local.search.parsing import tag_re

REPEAT_STOP = (8, 64, 2)  # (smallest, largest block in tokens, copies in a row): the engine stops the sample
MAX_PHRASE = 32  # longest repeated phrase looked for, in words
SHORT_COPIES = 4  # a phrase of 1 or 2 words is a loop at this many copies in a row
TAIL_CHARS = 12  # a repeated tail covers at least this many characters

_DANGLING = re.compile(
    r"(?:^|\s)(?:\d{1,2}[.)]|[-*\u2022]|step\s*\d+\s*:?|(?:step|demonstration)\s*:)\s*\Z", re.IGNORECASE
)
_PARTIAL_TAG = re.compile(r"<[^<>\s]{0,8}\Z")


@dataclass(frozen=True)
class Cut:
    text: str  # the reply with its loop(s) cut off
    reason: str  # the first loop's kind: "repeated sentence", "repeated phrase" or "repeated tail"
    dropped: int  # characters removed


def sentence_loop(text: str) -> int | None:
    """Where the first sentence that repeats an earlier one (3+ words) starts."""
    seen, start = set(), 0
    for m in [*SENTENCE_END.finditer(text), None]:
        end = m.start() if m else len(text)
        key = " ".join(WORD.findall(text[start:end].lower()))
        if key.count(" ") + 1 >= MIN_WORDS:
            if key in seen:
                return start
            seen.add(key)
        if m:
            start = m.end()
    return None


def phrase_loop(text: str) -> int | None:
    """Where the second copy of the first phrase said again right after itself starts (3+ words; 1 or 2
    words only at ``SHORT_COPIES`` copies in a row)."""
    spans = [(m.group(), m.start()) for m in WORD.finditer(text.lower())]
    w = [s for s, _ in spans]
    for j in range(1, len(w)):
        for p in range(1, min(MAX_PHRASE, j, len(w) - j) + 1):
            if w[j - 1] != w[j + p - 1] or w[j - p : j] != w[j : j + p]:
                continue
            if p < MIN_WORDS:
                copies = 2
                while copies < SHORT_COPIES and w[j + (copies - 1) * p : j + copies * p] == w[j : j + p]:
                    copies += 1
                if copies < SHORT_COPIES:
                    continue
            return spans[j][1]
    return None


def tail_loop(text: str) -> int | None:
    """Where the second copy of a repeated tail starts: ``text`` ends in 2+ copies of a unit (the smallest
    whose run covers ``TAIL_CHARS``); the run starts as early as the text allows, its first copy is kept."""
    n = len(text)
    for size in range(1, n // 2 + 1):
        if text[n - 2 * size : n - size] != text[n - size :]:
            continue
        start = n - 2 * size
        while start > 0 and text[start - 1] == text[start - 1 + size]:
            start -= 1
        if n - start >= TAIL_CHARS:
            return start + size
    return None


def loop_start(text: str, stopped: bool = False) -> tuple[int, str] | None:
    """(where the loop starts, its kind) in one item's text, or None. ``stopped``: the engine ended the
    sample on a repetition inside this text (the tail rule applies too)."""
    found = [
        (at, rank, why)
        for rank, (at, why) in enumerate(
            ((sentence_loop(text), "repeated sentence"), (phrase_loop(text), "repeated phrase"))
        )
        if at is not None
    ]
    if found:
        at, _, why = min(found)
        return at, why
    at = tail_loop(text) if stopped else None
    return None if at is None else (at, "repeated tail")


def _trim(kept: str) -> str:
    """The text before a cut, without trailing space and a dangling list marker (kept when it is all)."""
    kept = _PARTIAL_TAG.sub("", kept).rstrip()
    while (m := _DANGLING.search(kept)) and kept[: m.start()].strip():
        kept = kept[: m.start()].rstrip()
    return kept


def _close(text: str) -> str:
    """``text`` with an item it ends in closed (``<END>``), and an item opened with nothing in it dropped."""
    tags = list(tag_re("<START>", "<END>").finditer(text))
    if tags and tags[-1].group("open") and not tags[-1].group("slash"):
        if not text[tags[-1].end() :].strip():
            return text[: tags[-1].start()].rstrip()
        return text.rstrip() + "<END>"
    return text


def cut_loop(reply: str, stopped: bool = False) -> Cut | None:
    """``reply`` with every item's loop cut off (the rest of that item dropped, later items kept), or None
    when it has none. ``stopped``: the engine ended the sample on a repetition (finish reason)."""
    tags = list(tag_re("<START>", "<END>").finditer(reply))
    bounds = [0] + [x for m in tags for x in (m.start(), m.end())] + [len(reply)]
    pieces = [reply[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]  # text, tag, text, ..., text
    last = max((i for i in range(0, len(pieces), 2) if pieces[i].strip()), default=-1)
    reasons = []
    for i in range(0, len(pieces), 2):
        found = loop_start(pieces[i], stopped and i == last)
        if found:
            pieces[i] = _trim(pieces[i][: found[0]])
            reasons.append(found[1])
    if reasons:
        text = _close("".join(pieces))
    elif stopped and (at := tail_loop(reply)) is not None:  # a loop across items: whole items repeated
        text, reasons = _close(_trim(reply[:at])), ["repeated tail"]
    else:
        return None
    return Cut(text, reasons[0], len(reply) - len(text))
