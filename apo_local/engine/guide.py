"""Guided decoding for the transformers backend: a ``ReplyShape`` compiled by xgrammar (the grammar
library vLLM's structured outputs use) into a mask over the vocabulary at every decode step.

Without xgrammar installed the backend decodes free text (one warning); the optimizer's checks (tags,
truncation, candidate hygiene) still apply to every reply.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)


class TokenGuide:
    """Compiles shapes for one tokenizer (each shape once) and hands out one matcher per decoded row."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids):
        self.tokenizer, self.vocab_size, self.stop_ids = tokenizer, vocab_size, sorted(stop_ids)
        self._compiler = None
        self._compiled: dict = {}
        self.available = True

    def _compile(self, shape):
        import xgrammar as xgr

        if self._compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_ids or None
            )
            self._compiler = xgr.GrammarCompiler(info)
        if shape.kind == "regex":
            return self._compiler.compile_regex(shape.spec)
        if shape.kind == "json":
            return self._compiler.compile_json_schema(shape.spec)
        choices = "|".join(json.dumps(c) for c in shape.spec.split("\n"))  # EBNF string literals
        return self._compiler.compile_grammar(f"root ::= {choices}")

    def matcher(self, shape) -> RowMatcher | None:
        """A fresh matcher for ``shape``, or None (free text) when xgrammar is not installed."""
        if shape is None or not self.available:
            return None
        if shape not in self._compiled:
            try:
                self._compiled[shape] = self._compile(shape)
            except ImportError:
                self.available = False
                log.warning(
                    "xgrammar is not installed: the transformers backend decodes optimizer replies "
                    "unguided (their checks still apply)"
                )
                return None
        return RowMatcher(self._compiled[shape], self.vocab_size)


class RowMatcher:
    """One row's grammar state: ``mask`` the next-token logits, ``accept`` the token picked."""

    def __init__(self, compiled, vocab_size: int):
        import xgrammar as xgr

        self._xgr = xgr
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits) -> None:
        """Set the logits of every token the shape does not allow here to -inf (in place, one row)."""
        self.matcher.fill_next_token_bitmask(self.bitmask)
        row = logits.unsqueeze(0)
        self._xgr.apply_token_bitmask_inplace(row, self.bitmask.to(logits.device))

    def accept(self, token: int) -> None:
        self.matcher.accept_token(token)

    @property
    def finished(self) -> bool:
        return self.matcher.is_terminated()
