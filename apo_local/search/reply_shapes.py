r"""The shapes of the optimizer replies that have one: guided decoding makes the reply match it whole.

Each optimizer step declares its reply's shape where it asks (``OptimizerCalls.ask(..., shape=...)``);
``optimizer.guided: false`` asks for free text everywhere (the ablation), and replies are then parsed
leniently as before. Free-text steps (paraphrases, critiques) declare none. Every shape is a regular
expression over the whole reply, so both backends take it (vLLM structured outputs; the transformers
backend's xgrammar mask).

Item text excludes ``<`` and ``>`` (no nested tags) and starts with a non-space character. Sized to the
step's token budget (``max_tokens``, which every optimizer step passes), each item is **bounded in words**:
``k`` items of at most ``item_words(max_tokens, k)`` words, at ``TOKENS_PER_WORD`` (2) tokens a word (English
text runs about 1.3 with the tokenizers apo-local ships), plus their tags (``TAG_TOKENS`` each), fit within
``max_tokens``. A small model that loops inside an item is so made to close it (``<END>``) before the
budget ends, instead of running into truncation; the loop itself is then cut off the reply
(``search/repetition.py``), so what is kept is the text before it. ABO's steps shape bounds the number of
steps, each step's words and the demonstration's (``abo_budget``).

The bound counts words, with one fixed gap between them (a space, a line break or a blank line), because
that is what xgrammar handles cheaply: measured on the 2-core CPU with SmolLM2's tokenizer, a bounded word
repeat compiles in about 0.02 s (0.8 s for ABO's shape at 1024 tokens) and masks a token in under 0.1 ms,
while a bounded *character* repeat ``[^<>]{0,N}`` takes about 5 s to compile per shape, and a gap of
variable width (``\s{1,4}``, ``\s+``, ``\s\s?``) makes every token's mask cost 5 to 150 ms.
Without ``max_tokens`` the items are unbounded (a reply that runs out of tokens inside an item is truncated,
and a truncated reply is rejected by ``OptimizerCalls``, never cut short into a candidate).
"""

from __future__ import annotations

from apo_local.engine.protocol import ReplyShape

ITEM = r"[^<>\s][^<>]*"  # one item's text, unbounded: anything but tags, not blank
LINE = r"[^<>\s][^<>\n]*"  # one item on one line, unbounded

WORD = r"[^<>\s]+"  # a word: anything but tags and whitespace
GAP, LINE_GAP = r"[ \n]\n?", r"[ \t]"  # between words: a space, a line break or a blank line; on one line a space
TOKENS_PER_WORD = 2  # what the bound assumes a word (with its gap) costs at most, on average
TAG_TOKENS = 8  # per item: <START> and <END> (3 tokens each), the line break between items, a trailing space
EOS_TOKENS = 1
MIN_WORDS = 4  # an item is never bounded below this, whatever the budget (a tiny max_tokens may truncate)
STEP_WORDS = 10  # an ABO step line gets at least this many words (fewer steps fit a small budget)


def words(n: int, *, one_line: bool = False) -> str:
    """One item of 1 to ``n`` words (and at most 1 trailing space or line break)."""
    gap, tail = (LINE_GAP, r"[ \t]?") if one_line else (GAP, r"[ \n]?")
    more = rf"(?:{gap}{WORD}){{0,{n - 1}}}" if n > 1 else ""
    return WORD + more + tail


def item_words(max_tokens: int, k: int = 1) -> int:
    """Words per item so that ``k`` items and their tags fit within ``max_tokens`` tokens."""
    return max(MIN_WORDS, (max_tokens - EOS_TOKENS - k * TAG_TOKENS) // (TOKENS_PER_WORD * k))


def tagged(k: int = 1, *, one_line: bool = False, max_tokens: int | None = None) -> ReplyShape:
    """Exactly ``k`` items, each wrapped in ``<START>`` ... ``<END>``, one per line, nothing around them;
    with ``max_tokens``, each item at most ``item_words(max_tokens, k)`` words."""
    if max_tokens is None:
        body = LINE if one_line else ITEM
    else:
        body = words(item_words(max_tokens, k), one_line=one_line)
    item = f"<START>{body}<END>"
    return ReplyShape("regex", item + (rf"(?:\n{item}){{{k - 1}}}" if k > 1 else ""))


def abo_budget(max_tokens: int, demonstration: bool, max_steps: int = 8) -> tuple[int, int, int]:
    """(steps, words per step, words of the demonstration) that fit within ``max_tokens``: the demonstration
    gets 2/5 of the budget, the steps the rest (each step line costs 3 more tokens for its number); a
    small budget allows fewer steps of ``STEP_WORDS`` words rather than shorter steps."""
    budget = max_tokens - EOS_TOKENS - TAG_TOKENS - (6 if demonstration else 0)  # "\n\nDemonstration:\n"
    demo_tokens = budget * 2 // 5 if demonstration else 0
    step_tokens = budget - demo_tokens
    per_step = max(STEP_WORDS, step_tokens // max_steps // TOKENS_PER_WORD - 2)
    steps = max(1, min(max_steps, step_tokens // (per_step * TOKENS_PER_WORD + 3)))
    return steps, per_step, max(MIN_WORDS, demo_tokens // TOKENS_PER_WORD)


def abo_steps(demonstration: bool, max_steps: int = 8, *, max_tokens: int | None = None) -> ReplyShape:
    """One tagged instruction in ABO's form: numbered step lines "1. ...", "2. ...", ... (1 to
    ``max_steps``, numbered in order), then, with ``demonstration``, a "Demonstration:" section. With
    ``max_tokens``, the steps, their words and the demonstration's are bounded (``abo_budget``)."""
    line, demo_body = LINE, ITEM
    if max_tokens is not None:
        max_steps, per_step, demo_words = abo_budget(max_tokens, demonstration, max_steps)
        line, demo_body = words(per_step, one_line=True), words(demo_words)
    steps = ""
    for i in range(max_steps, 1, -1):  # "1. a(\n2. b(\n3. c)?)?": the numbers can only count up
        steps = rf"(?:\n{i}\. {line}{steps})?"
    steps = rf"1\. {line}{steps}"
    demo = rf"\n\nDemonstration:\n{demo_body}" if demonstration else ""
    return ReplyShape("regex", rf"<START>{steps}{demo}<END>")


def choice(options: list[str]) -> ReplyShape:
    """One of ``options``, verbatim (a judgement: "yes" / "no", a step number, ...)."""
    return ReplyShape("choice", "\n".join(options))
