"""Prompt token ids for whole batches, with as little host work per prompt as possible.

What ``ChatFormatter.prompt_ids`` does for one prompt, done for many:

- the chat template is rendered once (around a marker) and each prompt is wrapped by plain string
  concatenation, when the template is proven to copy the user message verbatim (probes with
  whitespace, newlines, braces; else every prompt is rendered by the template);
- one fast-tokenizer batch call per batch, not one call per prompt;
- a ``SplitPrompt`` (a ``str`` that also knows where its shared head ends: the scorer's candidate
  instruction before the example) is tokenized as *head ids + tail ids*: each head once, each tail
  once, joined. A join is used only where it is proven equal to the full tokenization: the
  tokenizer has no normalizer, no dummy prefix, no plain mode, and its pre-tokenizer splits the text at
  the joint (checked on a window around it, added tokens excluded); the joint is moved back to the
  start of the head's last pre-token, so "Text: " + "Says" is joined as "Text:" + " Says". The first
  joined prompt of every batch is also tokenized whole and compared; a difference turns joining off
  for this formatter (one log line) and the batch is tokenized whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

_MARK = "\u2063\u2064apo-user\u2064\u2063"
_PROBES = ("x", "  two  spaces \n\n", "\nlead", "{{ braces }} {% raw %}", "tail \n")
_WINDOW = 64  # characters of the tail that the joint's pre-tokenization check looks at


class SplitPrompt(str):
    """A prompt text whose first ``cut`` characters are shared by many prompts of a batch (a candidate
    instruction). Equal to, hashed and cached as, the plain text; only the tokenizer looks at ``cut``."""

    cut: int

    def __new__(cls, head: str, tail: str):
        obj = super().__new__(cls, head + tail)
        obj.cut = len(head)
        return obj


class BatchTokenizer:
    """Token ids of many prompts for one ``ChatFormatter``; equal, prompt by prompt, to its ``prompt_ids``."""

    def __init__(self, chat, max_memo: int = 65_536):
        self.chat, self.tok, self.max_memo = chat, chat.tokenizer, max_memo
        self.wrap = self._wrapper()  # (before, after) the user message, or None: render each prompt
        self.join = self.wrap is not None and self._joinable()
        self._heads: dict[str, tuple[list[int] | None, int, int]] = {}  # head -> (ids of chat head + head[:c], c, s)
        self._tails: dict[str, list[int]] = {}  # tail text (with the chat tail) -> ids
        self._joints: dict[tuple[str, str], bool] = {}
        self.stats = {"joined": 0, "whole": 0}

    # -- setup ------------------------------------------------------------------------------

    def _wrapper(self) -> tuple[str, str] | None:
        chat = self.chat
        if chat.plain:
            return None
        try:
            text = chat.render(_MARK)
        except Exception:
            return None
        if text.count(_MARK) != 1:
            return None
        before, after = text.split(_MARK)
        try:
            if all(chat.render(p) == before + p + after for p in _PROBES):
                return before, after
        except Exception:
            pass
        return None

    def _joinable(self) -> bool:
        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is None or backend.normalizer is not None or backend.pre_tokenizer is None:
            return False
        try:
            if self.chat.dummy_prefix():
                return False
        except Exception:
            return False
        self._pre = backend.pre_tokenizer.pre_tokenize_str
        self._added = [t for t in self.tok.get_added_vocab() if t]
        return True

    # -- ids --------------------------------------------------------------------------------

    def rendered(self, prompt: str) -> str:
        return self.wrap[0] + prompt + self.wrap[1] if self.wrap else self.chat.render(prompt)

    def whole(self, prompts: Sequence[str]) -> list[list[int]]:
        """Full tokenization, one batch call: exactly ``chat.prompt_ids`` per prompt."""
        if not prompts:
            return []
        texts = [self.rendered(p) for p in prompts]
        if self.chat.plain:
            return self.tok(texts)["input_ids"]
        one_bos = self.chat.one_bos
        return [one_bos(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]

    def ids(self, prompts: Sequence[str]) -> list[list[int]]:
        if not self.join or not any(isinstance(p, SplitPrompt) for p in prompts):
            self.stats["whole"] += len(prompts)
            return self.whole(prompts)
        if len(self._heads) > self.max_memo or len(self._tails) > self.max_memo:
            self._heads.clear(), self._tails.clear(), self._joints.clear()
        plan: list[tuple[str, str] | None] = [self._split(p) if isinstance(p, SplitPrompt) else None for p in prompts]
        self._tokenize_tails({t[1] for t in plan if t is not None})
        out: list[list[int] | None] = []
        rest = []
        for i, (_p, t) in enumerate(zip(prompts, plan)):
            if t is None:
                out.append(None)
                rest.append(i)
            else:
                out.append(self._heads[t[0]][0] + self._tails[t[1]])
        for i, ids in zip(rest, self.whole([prompts[i] for i in rest])):
            out[i] = ids
        first = next((i for i, t in enumerate(plan) if t is not None), None)
        if first is not None and out[first] != self.whole([prompts[first]])[0]:
            log.warning(
                "joined token ids differ from the full tokenization for this tokenizer: "
                "prompts are tokenized whole from now on"
            )
            self.join = False
            return self.ids(prompts)
        self.stats["joined"] += len(prompts) - len(rest)
        self.stats["whole"] += len(rest)
        return out  # type: ignore[return-value]

    def _split(self, p: SplitPrompt) -> tuple[str, str] | None:
        """(head key, tail text) when the joint is proven safe, else None (tokenize whole)."""
        head = str.__str__(p)[: p.cut]
        if head not in self._heads:
            self._heads[head] = self._head(head)
        ids, c, s = self._heads[head]
        if ids is None:
            return None
        tail = head[c:] + str.__str__(p)[p.cut :] + self.wrap[1]
        key = (head[s:c], tail[:_WINDOW])
        if key not in self._joints:
            self._joints[key] = self._safe_joint(*key)
        return (head, tail) if self._joints[key] else None

    def _head(self, head: str) -> tuple[list[int] | None, int, int]:
        """The head's ids up to the start of its last pre-token (the joint ``c``), ``c``, and the start
        ``s`` of an earlier pre-token (the joint's check looks at ``head[s:c]``)."""
        pieces = self._pre(head)
        if len(pieces) < 3:
            return None, 0, 0
        c = pieces[-1][1][0]
        s = next(span[0] for _, span in pieces[1:] if span[0] >= c - _WINDOW or span[0] == pieces[-2][1][0])
        if not 0 < s < c:
            return None, 0, 0
        ids = self.chat.one_bos(self.tok(self.wrap[0] + head[:c], add_special_tokens=False)["input_ids"])
        return ids, c, s

    def _safe_joint(self, left: str, right: str) -> bool:
        if not left or not right:
            return False
        window = left + right
        if any(t in window for t in self._added):
            return False
        pieces = self._pre(window)
        return len(left) in {span[0] for _, span in pieces}

    def _tokenize_tails(self, tails: set[str]) -> None:
        todo = [t for t in tails if t not in self._tails]
        if todo:
            self._tails.update(zip(todo, self.tok(todo, add_special_tokens=False)["input_ids"]))
