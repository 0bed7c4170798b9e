"""Calls to the optimizer model: one seeded batch per step, and lenient parsing of its replies."""

from __future__ import annotations

from typing import Sequence

from apo_local.config import OptimizerConfig
from apo_local.engine import Generation, GenerationRequest, RoleEngine
from apo_local.search.parsing import extract_tagged
from apo_local.search.streams import Streams


class OptimizerCalls:
    def __init__(self, engine: RoleEngine, settings: OptimizerConfig, parse_fallback: str, streams: Streams,
                 before_call=lambda: None):
        self.engine, self.settings, self.parse_fallback, self.streams = engine, settings, parse_fallback, streams
        self.before_call = before_call  # the budget check between engine batches

    @property
    def trace(self):
        return self.engine.trace

    def ask(self, purpose: str, prompts: Sequence[str], n: int = 1) -> list[Generation]:
        """One batched optimizer call; request i is seeded from (seed, round, purpose, i)."""
        o = self.settings
        reqs = [GenerationRequest(p, temperature=o.temperature, top_p=o.top_p, max_tokens=o.max_tokens, n=n,
                                  seed=self.streams.request_seed(purpose, i))
                for i, p in enumerate(prompts)]
        self.before_call()
        self.trace.at(purpose, self.streams.round)
        out = self.engine.generate(reqs)
        for g in out:
            if g.error:
                self.trace.event("optimizer_error", purpose=purpose, error=g.error)
        return out

    def parse(self, text: str, purpose: str, tagged: bool = True) -> list[str]:
        """Items in <START>/<END> tags; every failure is counted and logged, never fatal.

        ``tagged=False``: the meta-prompt asked for plain text (the paraphrase, as in the reference), so with
        ``parse_fallback: whole`` a reply without tags is the expected answer, not a counted fallback; tags
        are still honoured if present. ``parse_fallback: none`` accepts tagged items only, everywhere."""
        result = extract_tagged(text, fallback=self.parse_fallback)
        for reason in (f for f in result.failures if tagged or not f.startswith("no tags")):
            self.trace.event("parse_failure", purpose=purpose, reason=reason, reply=text[:300])
        return result.items

    def sample_items(self, reply: Generation, purpose: str, limit: int = 1, tagged: bool = True) -> list[str]:
        """The first ``limit`` parsed items of every sample of ``reply`` (one list, sample order)."""
        return [item for text in reply.texts for item in self.parse(text, purpose, tagged)[:limit]]
