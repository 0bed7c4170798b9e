"""Candidate hygiene: proposals a small optimizer model makes that are not instructions at all.

Each rule names why a proposal is rejected (``search.hygiene``: ``all``, the default; ``form``: the form
rules only; ``off``):

* ``too short``: fewer than 3 words (a bare "No");
* ``chat filler``: chat or meta-commentary about the edit instead of an instruction ("Please continue
  with your next prompt.", "This edit improves ...", "I hope this helps");
* ``drops label words``: the parent names the task's labels (e.g. "Yes" / "No") and the proposal lost one;
* ``repeated sentence``: a sentence of 3+ words occurs twice (a looping reply);
* ``copies training data``: more than ``search.copy_overlap`` of its word 6-grams occur in training
  inputs (a copied example row). An ABO demonstration, which shows one example on purpose, is left out;
* ``pastes examples``: it pastes the rows the optimizer was shown into the instruction: an error example's
  "Label: Yes / Prediction: No" pair, an example's "Input: ... / Label: Yes" row, or a run of ``COPY_SPAN``+
  words copied from a training input (a pasted row inside a longer instruction stays under ``copy_overlap``).
  A parent that already holds such a row (e.g. a user's few-shot instruction) lets its children keep it;
  an ABO demonstration and a few-shot prompt's ``<demonstrations>`` block are left out.

``too short``, ``chat filler`` and ``repeated sentence`` are the form rules: they judge what any operator
writes alike. ``drops label words``, ``copies training data`` and ``pastes examples`` judge content that depends on the operator
(an operator shown no data cannot copy a row, and one shown no outputs names the labels less often: on Liar
with SmolLM2-135M "drops label words" rejected 7 of 8 free-text rewrites but 1 of 8 free-text edits,
docs/benchmarks.md), so a study that compares operators keeps the form rules only (``search.hygiene: form``,
the study configs'); docs/vs-papers.md lists hygiene as a difference from the papers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from apo_local.support.errors import ApoError
from apo_local.tasks.demos import split_prompt

NGRAM = 6
MIN_WORDS = 3
COPY_SPAN = 12  # words in a row copied from one training input that make a pasted example

_FILLER = re.compile(
    "|".join(
        [
            r"\bplease (?:continue|proceed|provide|let me know|note that (?:this|the) (?:prompt|edit))\b",
            r"\b(?:your|the) next (?:prompt|question|message)\b",
            r"\blet me know\b",
            r"\bhope (?:this|that|it) helps\b",
            r"\bas an ai\b",
            r"\bfeel free to\b",
            r"\bi(?:'m| am) (?:sorry|happy to|glad to|here to)\b",
            r"\bi (?:can(?:not|'t)|would be happy)\b",
            r"\bthis (?:edit|change|revision|rewrite|version|update|modification) (?:improves|makes|clarifies|adds|helps|"
            r"ensures|should|will|is)\b",
            r"\b(?:the|this|my) (?:above|new|improved|revised|updated|rewritten) (?:prompt|instruction|version)s? "
            r"(?:is|are|will|should|improves|makes|helps|clarifies)\b",
            r"\bi (?:have |'ve )?(?:revised|rewritten|improved|updated|modified|changed|edited)\b",
            r"\bhere(?:'s| is| are) (?:the|a|an|my) (?:new |improved |revised |updated |rewritten )?"
            r"(?:prompt|version|instruction)",
            r"^(?:sure|certainly|of course|okay|great|absolutely)\b[,!.]",
        ]
    ),
    re.IGNORECASE | re.MULTILINE,
)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
WORD = re.compile(r"[a-z0-9']+")
_DEMO = re.compile(r"^\s*\**\s*demonstration\s*\**\s*:", re.IGNORECASE | re.MULTILINE)
_ANSWER_FIELD = r"(?:prediction|predicted(?:\s+label)?|model(?:'s)?\s+(?:output|answer)|output|its\s+answer)"
_INPUT_FIELD = r"(?:input|text)"
_LABEL_FIELD = r"(?:correct\s+|true\s+|gold\s+)?label"


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", text, re.IGNORECASE) is not None


class Hygiene:
    """The rules above for one task: its training inputs (for copies) and its label words."""

    def __init__(
        self, train_inputs: Iterable[str], labels: Sequence[str], copy_overlap: float = 0.5, rules: str = "all"
    ):
        self.labels, self.copy_overlap, self.form_only = tuple(labels), copy_overlap, rules == "form"
        self.data: set[tuple[str, ...]] = set()
        for text in train_inputs:
            self.data |= ngrams(text)

    def reason(self, text: str, parent: str) -> str | None:
        """The rule ``text`` breaks (a short reason), or None when it is a usable instruction."""
        if len(words(text)) < MIN_WORDS:
            return "too short"
        if _FILLER.search(text):
            return "chat filler"
        lost = [] if self.form_only else [w for w in self.labels if _has_word(parent, w) and not _has_word(text, w)]
        if lost:
            return f"drops label words ({', '.join(lost)})"
        if self._repeats(text):
            return "repeated sentence"
        if self.form_only:
            return None
        share = self.copied_share(text)
        if share > self.copy_overlap:
            return f"copies training data ({share:.0%} of its 6-grams)"
        pasted = self.pasted_example(text)
        if pasted and not self.pasted_example(parent):
            return f"pastes examples ({pasted})"
        return None

    def pasted_example(self, text: str) -> str | None:
        """What in ``text`` is a pasted example row (see the module's ``pastes examples``), or None. A few-shot
        prompt's ``<demonstrations>`` block (``tasks/demos.py``) holds training rows on purpose: left out."""
        try:
            text = split_prompt(text)[0]
        except ApoError:  # a malformed block: judged as it is
            pass
        m = _DEMO.search(text)
        text = text[: m.start()] if m else text
        label = "|".join(re.escape(w) for w in sorted(self.labels, key=len, reverse=True)) or r"[^\s\"']+"
        value = rf"[\"'*]*(?:{label})[\"'*]*"
        if re.search(rf"\b{_LABEL_FIELD}\s*:\s*{value}[\s.,;|]*{_ANSWER_FIELD}\s*:\s*{value}", text, re.IGNORECASE):
            return "a Label/Prediction pair"
        if re.search(
            rf"\b{_INPUT_FIELD}\s*:\s*\"[^\"\n]{{10,}}\"\s*{_LABEL_FIELD}\s*:\s*{value}(?!\w)", text, re.IGNORECASE
        ) or re.search(
            rf"^\W*{_INPUT_FIELD}\s*:[^\n]{{10,}}\n(?:[^\n]*\n){{0,6}}?\W*{_LABEL_FIELD}\s*:\s*{value}\W*$",
            text,
            re.IGNORECASE | re.MULTILINE,
        ):
            return "an Input/Label row"
        span = self.copied_span(text)
        if span >= COPY_SPAN:
            return f"{span} words in a row from a training input"
        return None

    def copied_span(self, text: str) -> int:
        """The most words in a row of ``text`` whose every 6-gram occurs in the training inputs (0: none)."""
        w = words(text)
        best = run = 0
        for i in range(len(w) - NGRAM + 1):
            run = run + 1 if tuple(w[i : i + NGRAM]) in self.data else 0
            best = max(best, run)
        return best + NGRAM - 1 if best else 0

    @staticmethod
    def _repeats(text: str) -> bool:
        seen = set()
        for sentence in SENTENCE_END.split(text):
            key = " ".join(words(sentence))
            if len(key.split()) >= MIN_WORDS:
                if key in seen:
                    return True
                seen.add(key)
        return False

    def copied_share(self, text: str) -> float:
        """Share of ``text``'s word 6-grams found in the training inputs (an ABO demonstration left out)."""
        m = _DEMO.search(text)
        grams = ngrams(text[: m.start()] if m else text)
        return len(grams & self.data) / len(grams) if grams else 0.0


def rule(reason: str) -> str:
    """The rule a rejection reason names, without its numbers: ``too long (900 chars > 800)`` -> ``too long``."""
    return reason.split(" (", 1)[0]


def make_hygiene(
    rules: str, train_inputs: Iterable[str], labels: Sequence[str], copy_overlap: float = 0.5
) -> Hygiene | None:
    """The hygiene of ``search.hygiene`` (``all`` | ``form`` | ``off``: None)."""
    return None if rules == "off" else Hygiene(train_inputs, labels, copy_overlap, rules)
