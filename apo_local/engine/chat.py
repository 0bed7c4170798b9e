"""Chat formatting and tokenization, shared by every backend (vLLM, transformers).

``ChatFormatter`` turns a prompt (the user message) into the token ids the model sees and decides
how labels are scored. One place for what differs between model families:

- the chat template: the registry's override, else the tokenizer's own, else **plain mode** (a base
  model without a template: the prompt goes in as text, with the tokenizer's BOS; one log line says so).
  The registry's ``chat_template: plain`` (``""`` here) asks for plain mode whatever the tokenizer has;
- chat-template keyword arguments (e.g. ``enable_thinking``): a template that has an
  ``enable_thinking`` switch (Qwen 3) gets ``enable_thinking=False`` unless the settings say otherwise;
- templates without a system role (Gemma): a system text is merged into the user turn;
- the BOS token: the template's own is kept, never doubled;
- labels: scored as the start of the assistant reply (context-aware tokenization); when one label's
  tokens are a prefix of another's ("1"/"10", "No"/"No way"), every label is scored together with
  the end-of-turn token that closes the reply, so a longer label can win;
- replies: thinking text (``<think>...</think>``) is stripped before anything reads them;
- the one too-long check (``fit``) both backends use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence

from apo_local.support.errors import ApoError

log = logging.getLogger(__name__)

_MARK = "\u2063apo\u2063"  # an assistant reply no template changes, to find what the template puts after it
_THINK_OPEN = re.compile(r"^\s*<(think|thinking|reasoning)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)


def strip_thinking(text: str) -> str:
    """The reply without its reasoning: the text after the last ``</think>`` (R1-style templates open
    the block in the prompt), or nothing when a ``<think>`` block never closed (the budget ran out)."""
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        return text[closes[-1].end() :].lstrip()
    if _THINK_OPEN.match(text):
        return ""
    return text


class ChatFormatter:
    """Renders and tokenizes prompts for one model (tokenizer + template + template kwargs)."""

    def __init__(
        self, tokenizer, chat_template: str | None = None, template_kwargs: dict | None = None, name: str = "model"
    ):
        self.tokenizer = tokenizer
        # None: the tokenizer's own (registry: chat_template: builtin); "": none (chat_template: plain)
        self.chat_template = chat_template
        template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
        if isinstance(template, dict):  # some tokenizers keep several named templates
            template = template.get("default") or next(iter(template.values()), None)
        self.plain = not template
        if self.plain and chat_template == "":
            log.info("%s: chat_template: plain, prompts go in as plain text (base-model mode)", name)
        elif self.plain:
            log.warning("%s has no chat template: prompts go in as plain text (base-model mode)", name)
        kwargs = dict(template_kwargs or {})
        if template and "enable_thinking" in template and "enable_thinking" not in kwargs:
            kwargs["enable_thinking"] = False  # answers and edits, not reasoning, are what is scored and parsed
        self.template_kwargs = kwargs
        # R1-style templates open the reasoning block in the prompt and have no switch to turn it off
        self.opens_thinking = not self.plain and bool(_THINK_OPEN.search(self._tail_of_prompt()))
        self.bos_id = getattr(tokenizer, "bos_token_id", None)
        self._label_ids: dict[str, tuple[int, ...]] = {}
        self._end: tuple[str, int | None] | None = None

    @property
    def template_id(self) -> str:
        """Part of the model identity: the same prompt text under another template is another input."""
        parts = []
        if self.chat_template:  # plain mode asked for ("") is the same input as a tokenizer without a template
            parts.append("|tpl:" + hashlib.sha256(self.chat_template.encode()).hexdigest()[:8])
        if self.plain:
            parts.append("|plain")
        if self.template_kwargs:
            blob = json.dumps(self.template_kwargs, sort_keys=True, default=str)
            parts.append("|kw:" + hashlib.sha256(blob.encode()).hexdigest()[:8])
        return "".join(parts)

    # -- prompts ------------------------------------------------------------------------------

    def render(self, prompt: str, system: str | None = None, reply: str | None = None) -> str:
        """The text the model sees: the prompt as a user turn plus the assistant header (or ``reply``)."""
        if self.plain:
            return (system + "\n\n" if system else "") + prompt + (reply or "")
        messages = [{"role": "user", "content": prompt}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        if reply is not None:
            messages.append({"role": "assistant", "content": reply})
        try:
            return self._apply(messages, generation=reply is None)
        except Exception as exc:  # jinja2 TemplateError from raise_exception, or a template bug
            if system and "system" in str(exc).lower():  # no system role (Gemma): merge into the user turn
                return self.render(f"{system}\n\n{prompt}", None, reply)
            raise ApoError(f"the chat template failed to render a prompt: {str(exc).splitlines()[0][:200]}") from None

    def _tail_of_prompt(self) -> str:
        try:
            text = self.render("x")
        except ApoError:
            return ""
        at = text.rfind("<")
        return text[at:] if at >= 0 and text[at:].strip().lower() in ("<think>", "<thinking>", "<reasoning>") else ""

    def _apply(self, messages: list[dict], generation: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=generation,
            tokenize=False,
            chat_template=self.chat_template,
            **self.template_kwargs,
        )

    def prompt_ids(self, prompt: str, system: str | None = None) -> list[int]:
        text = self.render(prompt, system)
        if self.plain:
            return self.tokenizer(text)["input_ids"]  # the tokenizer's own BOS, as in pre-training
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.one_bos(ids)

    def one_bos(self, ids: list[int]) -> list[int]:
        """A template that writes its BOS into the text, tokenized by a tokenizer that adds one too,
        would start with two: keep one."""
        bos = self.bos_id
        while bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        return ids

    def fit(self, prompt: str, max_model_len: int, reserve: int = 1) -> tuple[list[int], str | None]:
        """The prompt's ids, and an error when they leave fewer than ``reserve`` tokens of the context
        for the reply (generation) or the label (scoring). The one too-long check of every backend."""
        ids = self.prompt_ids(prompt)
        limit = max_model_len - reserve
        return ids, (f"prompt too long ({len(ids)} tokens > {limit})" if len(ids) > limit else None)

    # -- labels -------------------------------------------------------------------------------

    def continuation_ids(self, label: str) -> tuple[int, ...]:
        """Tokens of ``label`` as the start of the assistant reply.

        Context-aware: the label's tokens after the rendered prompt, as the tokenizer splits the
        whole text. Two exceptions: a SentencePiece tokenizer that prefixes words with "▁" (Llama 2,
        Mistral) scores the label as it encodes it alone ("▁Yes"), because such models' replies are
        encoded on their own in training and start with "▁"; in plain mode the label follows the
        prompt after a space ("Answer: Yes")."""
        if label not in self._label_ids:
            bare = tuple(self.tokenizer(label, add_special_tokens=False)["input_ids"])
            if not self.plain and self.dummy_prefix():
                ids = bare
            else:
                prefix = self.prompt_ids("x")
                spaced = " " + label if self.plain and not label[:1].isspace() else label
                full = self._encode_rendered(self.tokenizer.decode(prefix) + spaced)
                ids = tuple(full[len(prefix) :]) if full[: len(prefix)] == prefix and len(full) > len(prefix) else bare
            if not ids:
                raise ApoError(f"label {label!r} tokenizes to nothing")
            self._label_ids[label] = ids
        return self._label_ids[label]

    def _encode_rendered(self, text: str) -> list[int]:
        return self.one_bos(self.tokenizer(text, add_special_tokens=self.plain)["input_ids"])

    def dummy_prefix(self) -> bool:
        """Whether the tokenizer starts a lone word with SentencePiece's "▁" (adds a dummy prefix)."""
        ids = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        first = self.tokenizer.convert_ids_to_tokens(ids[:1])
        return bool(first) and isinstance(first[0], str) and first[0].startswith("\u2581")

    def end_of_turn_id(self) -> int | None:
        """The token that closes an assistant reply: the first token the template writes after it
        (``<|eot_id|>``, ``<|im_end|>``, ``<end_of_turn>``, ``</s>``); a newline in plain mode.
        Found in context: the ids of prompt + "Yes" + what follows, past those of prompt + "Yes"."""
        if self._end is None:
            tail = "\n"
            if not self.plain:
                try:
                    full = self.render("x", reply=_MARK)
                    at = full.find(_MARK)
                    tail = full[at + len(_MARK) :] if at >= 0 else ""
                except ApoError:
                    tail = ""
            end = None
            if tail:
                head = self.tokenizer.decode(self.prompt_ids("x")) + ("Yes" if not self.plain else " Yes")
                short, long = self._encode_rendered(head), self._encode_rendered(head + tail)
                if long[: len(short)] == short and len(long) > len(short):
                    end = long[len(short)]
            if end is None:
                eos = getattr(self.tokenizer, "eos_token_id", None)
                end = eos if isinstance(eos, int) else None
            self._end = (tail, end)
        return self._end[1]

    def label_ids(self, labels: Sequence[str]) -> list[tuple[int, ...]]:
        """The token ids to score for each label. When a label's ids are a proper prefix of another's,
        every label gets the end-of-turn token appended: P("No" then end) vs P("No way" then end);
        without it the longer label could never win. Otherwise the label's own ids (cheaper: no step)."""
        ids = [self.continuation_ids(lab) for lab in labels]
        nested = any(a != b and b[: len(a)] == a for a in ids for b in ids)
        if not nested:
            return ids
        end = self.end_of_turn_id()
        if end is None:
            shown = ", ".join(repr(lab) for lab in labels)
            raise ApoError(
                f"labels {shown}: one is a prefix of another and the model has no end-of-turn "
                f"token to tell them apart; rename the labels"
            )
        return [i + (end,) for i in ids]

    def clean_reply(self, text: str) -> str:
        """A generated reply as callers see it: reasoning stripped (when the prompt opened the
        reasoning block, a reply that never closed it is all reasoning, and empty)."""
        if self.opens_thinking and not _THINK_CLOSE.search(text):
            return ""
        return strip_thinking(text)
