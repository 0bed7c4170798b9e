"""What a proposer works with in one round: data, scorer, optimizer model, meta-prompts, seeded RNGs.

Randomness is derived from (seed, round, purpose), never from shared mutable state, so a
resumed run draws exactly what an uninterrupted run drew.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Sequence

from apo_local.config import RunConfig
from apo_local.engine import Generation, GenerationRequest, RoleEngine
from apo_local.scoring import Scorer
from apo_local.search.meta_prompts import MetaPrompts
from apo_local.search.parsing import extract_tagged, is_degenerate
from apo_local.tasks import Example, Task


@dataclass
class SearchContext:
    task: Task
    train: list[Example]
    scorer: Scorer
    optimizer: RoleEngine
    cfg: RunConfig
    meta: MetaPrompts
    round: int = 0

    @property
    def trace(self):
        return self.optimizer.trace

    def rng(self, *purpose) -> random.Random:
        return random.Random("|".join(map(str, (self.cfg.seed, self.round, *purpose))))

    def request_seed(self, *purpose) -> int:
        digest = hashlib.sha256("|".join(map(str, (self.cfg.seed, self.round, *purpose))).encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def ask(self, purpose: str, prompts: Sequence[str], n: int = 1) -> list[Generation]:
        """One batched optimizer call; request i is seeded from (seed, round, purpose, i)."""
        o = self.cfg.optimizer
        reqs = [
            GenerationRequest(p, temperature=o.temperature, top_p=o.top_p, max_tokens=o.max_tokens, n=n,
                              seed=self.request_seed(purpose, i))
            for i, p in enumerate(prompts)
        ]
        self.trace.at(purpose, self.round)
        out = self.optimizer.generate(reqs)
        for g in out:
            if g.error:
                self.trace.event("optimizer_error", purpose=purpose, error=g.error)
        return out

    def parse(self, text: str, purpose: str) -> list[str]:
        """Items in <START>/<END> tags; every failure is counted and logged, never fatal."""
        result = extract_tagged(text, fallback=self.cfg.search.parse_fallback)
        for reason in result.failures:
            self.trace.event("parse_failure", purpose=purpose, reason=reason, reply=text[:300])
        return result.items

    def admit(self, text: str, parent: str) -> str | None:
        """Why a proposed instruction can't become a candidate (degenerate, too long), or None."""
        reason = is_degenerate(text, parent)
        if reason is None:
            probe = self.task.render(text, Example(id="probe", input="", label=""))
            n = self.scorer.engine.count_tokens([probe])[0]
            if n + 16 > self.scorer.engine.max_model_len:
                reason = f"too long for the target's context ({n} tokens > {self.scorer.engine.max_model_len - 16})"
        if reason:
            self.trace.event("candidate_rejected", reason=reason, text=text[:300])
        return reason
