"""Calls to the optimizer model: one seeded batch per step, guided replies, loops cut, and lenient parsing.

A step whose reply has a known shape declares it (``search/reply_shapes.py``, sized to ``optimizer.max_tokens``
so that every item closes within the budget); with ``optimizer.guided`` (the default) the engine decodes the
reply inside that shape, so it cannot miss its tags. With ``optimizer.cut_repetition`` (the default) the
engine stops a sample that starts repeating itself and the loop is cut off (``search/repetition.py``): the
text before it is kept. A reply that ended because it ran out of tokens (with no loop to cut) is
truncated: it is rejected here (counted, logged with its reason) and never parsed into a gradient or a
candidate. Every reply is counted (``replies``, ``replies_guided``, ``replies_truncated``,
``replies_cut_repetition``, ``replies_used_whole``) in the trace's counts, which ``results.json`` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from apo_local.config.schema import OptimizerConfig
from apo_local.engine import Generation, GenerationRequest, RoleEngine
from apo_local.engine.protocol import ReplyShape
from apo_local.search.parsing import extract_tagged
from apo_local.search.repetition import REPEAT_STOP, cut_loop
from apo_local.search.streams import Streams


class OptimizerCalls:
    def __init__(
        self,
        engine: RoleEngine,
        settings: OptimizerConfig,
        parse_fallback: str,
        streams: Streams,
    ):
        self.engine, self.settings, self.parse_fallback, self.streams = engine, settings, parse_fallback, streams

    @property
    def trace(self):
        return self.engine.trace

    @property
    def max_tokens(self) -> int:
        """The token budget of every reply: what the steps size their reply shapes to."""
        return self.settings.max_tokens

    @property
    def cut_repetition(self) -> bool:
        return self.settings.cut_repetition

    def ask(
        self,
        purpose: str,
        prompts: Sequence[str],
        n: int = 1,
        shape: ReplyShape | None = None,
        keep_truncated: bool = False,
    ) -> list[Generation]:
        """One batched optimizer call; request i is seeded from (seed, round, purpose, i).

        ``shape``: the reply's shape, enforced when ``optimizer.guided`` is on. A loop is cut off the
        replies (counted, logged); truncated samples are removed from the replies (counted and logged),
        unless ``keep_truncated`` (a reply read as free context, never a candidate: the three-stage critique)."""
        o = self.settings
        guide = shape if getattr(o, "guided", True) else None
        stop = REPEAT_STOP if self.cut_repetition else None
        reqs = [
            GenerationRequest(
                p,
                temperature=o.temperature,
                top_p=o.top_p,
                max_tokens=o.max_tokens,
                n=n,
                seed=self.streams.request_seed(purpose, i),
                shape=guide,
                repetition=stop,
            )
            for i, p in enumerate(prompts)
        ]
        self.trace.at(purpose, self.streams.round)
        out = self.engine.generate(reqs)
        return [self._screen(g, purpose, guide is not None, keep_truncated) for g in out]

    def _screen(self, g: Generation, purpose: str, guided: bool, keep_truncated: bool) -> Generation:
        """Count ``g``'s samples; cut loops off; drop the truncated ones (unless kept), logging each."""
        count = self.trace.count
        if g.error:
            self.trace.event("optimizer_error", purpose=purpose, error=g.error)
            return g
        count("replies", len(g.texts))
        if guided:
            count("replies_guided", len(g.texts))
        kept = []
        for i, text in enumerate(g.texts):
            finish = g.finish_reasons[i] if i < len(g.finish_reasons) else ""
            cut = cut_loop(text, stopped=finish == "repetition") if self.cut_repetition else None
            if cut is not None:
                count("replies_cut_repetition")
                self.trace.event(
                    "reply_cut_repetition",
                    purpose=purpose,
                    reason=cut.reason,
                    finish=finish or None,
                    dropped_chars=cut.dropped,
                    reply=text[:300],
                )
                text = cut.text
            elif g.truncated(i) or finish == "repetition":
                count("replies_truncated")
                why = "max_tokens reached" if g.truncated(i) else "stopped repeating itself, no loop found to cut"
                self.trace.event(
                    "reply_truncated",
                    purpose=purpose,
                    reason=why,
                    max_tokens=self.settings.max_tokens,
                    kept=keep_truncated,
                    reply=text[:300],
                )
                if not keep_truncated:
                    continue
            elif not text.strip():
                self.trace.event("parse_failure", purpose=purpose, reason="empty reply", reply="")
            kept.append(text)
        if tuple(kept) == g.texts:
            return g
        return replace(g, texts=tuple(kept), finish_reasons=())

    def parse(self, text: str, purpose: str, tagged: bool = True) -> list[str]:
        """Items in <START>/<END> tags; every failure is counted and logged, never fatal.

        ``tagged=False``: the meta-prompt asked for plain text (the paraphrase, as in the reference), so with
        ``parse_fallback: whole`` a reply without tags is the expected answer, not a counted fallback; tags
        are still honoured if present. ``parse_fallback: none`` accepts tagged items only, everywhere.
        An empty text (a truncated reply removed by ``ask``, or no sample) gives no items and no failure."""
        if not text:
            return []
        result = extract_tagged(text, fallback=self.parse_fallback)
        for reason in (f for f in result.failures if tagged or not f.startswith("no tags")):
            self.trace.event("parse_failure", purpose=purpose, reason=reason, reply=text[:300])
        if result.fallback_used and tagged:
            self.trace.count("replies_used_whole")
        return result.items

    def sample_items(self, reply: Generation, purpose: str, limit: int = 1, tagged: bool = True) -> list[str]:
        """The first ``limit`` parsed items of every sample of ``reply`` (one list, sample order)."""
        return [item for text in reply.texts for item in self.parse(text, purpose, tagged)[:limit]]
