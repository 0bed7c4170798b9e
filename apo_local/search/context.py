"""What a proposer works with in one round: data, scorer, optimizer model, meta-prompts, seeded RNGs.

Randomness is derived from (seed, round, purpose), never from shared mutable state, so a
resumed run draws exactly what an uninterrupted run drew.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Sequence

from apo_local.config import RunConfig
from apo_local.engine import Generation, GenerationRequest, RoleEngine
from apo_local.scoring import Scorer
from apo_local.search import feedback as fb
from apo_local.search.candidates import Candidate
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
    _shown: dict = field(default_factory=dict, repr=False)

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

    def parse(self, text: str, purpose: str, tagged: bool = True) -> list[str]:
        """Items in <START>/<END> tags; every failure is counted and logged, never fatal.

        ``tagged=False``: the meta-prompt asked for plain text (the paraphrase, as in the reference), so with
        ``parse_fallback: whole`` a reply without tags is the expected answer, not a counted fallback; tags
        are still honoured if present. ``parse_fallback: none`` accepts tagged items only, everywhere."""
        result = extract_tagged(text, fallback=self.cfg.search.parse_fallback)
        failures = [f for f in result.failures if tagged or not f.startswith("no tags")]
        for reason in failures:
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

    def admit_and_cap(self, proposals: list[Candidate], parents: list[Candidate]) -> list[Candidate]:
        """Dedupe, reject degenerate or over-long ones, keep at most ``max_expansion`` per parent (seeded)."""
        by_id = {p.id: p for p in parents}
        root = {p.id: p.id for p in parents}
        seen = set(by_id)
        out: list[Candidate] = []
        for c in proposals:
            root.setdefault(c.id, root.get(c.parent, c.parent))
            if c.id in seen:
                continue
            seen.add(c.id)
            reason = self.admit(c.text, by_id[root[c.id]].text if root[c.id] in by_id else "")
            if reason:
                c.status = f"rejected: {reason}"
            out.append(c)
        cap = self.cfg.search.max_expansion
        for parent in parents:
            mine = [c for c in out if root[c.id] == parent.id and c.status == "new"]
            if len(mine) > cap:
                keep = {c.id for c in self.rng("cap", parent.id).sample(mine, cap)}
                for c in mine:
                    if c.id not in keep:
                        c.status = "dropped: over max_expansion"
        return out

    # -- feedback shown to the optimizer (shared by the data-driven proposers) ------------------

    def shown(self, ex: Example) -> Example:
        """The example as the optimizer sees it: its label corrupted when ``feedback.labels: wrong``."""
        f = self.cfg.feedback
        if f.labels == "true":
            return ex
        if ex.id not in self._shown:
            self._shown[ex.id] = fb.with_label(ex, fb.corrupt_label(ex, self.task, self.cfg.seed, f.numeric_offset))
        return self._shown[ex.id]

    def minibatch(self) -> list[Example]:
        s = self.cfg.search
        return self.rng("minibatch").sample(self.train, min(s.minibatch_size, len(self.train)))

    def feedback_pool(self, parents: list[Candidate]) -> tuple[list[Example], dict[str, list[tuple[Example, str | None]]]]:
        """One target batch: every parent on the round's minibatch. Per parent, the rows the optimizer
        may be shown: its real errors, pseudo errors (correct rows with flipped predictions), or, with
        ``show_evaluation: false``, all rows (outputs without correctness)."""
        f = self.cfg.feedback
        minibatch = self.minibatch()
        self.trace.at("minibatch", self.round)
        preds = self.scorer.predict([(p.text, ex) for p in parents for ex in minibatch])
        shown = [self.shown(ex) for ex in minibatch]
        pools = {}
        for k, parent in enumerate(parents):
            chunk = preds[k * len(minibatch) : (k + 1) * len(minibatch)]
            rows = [(ex, pr.label, self.task.metric.example_score(pr.label, ex.label)) for ex, pr in zip(shown, chunk)]
            if not f.show_evaluation:
                pools[parent.id] = [(ex, pred) for ex, pred, _ in rows]
            elif f.errors == "pseudo":
                pools[parent.id] = fb.pseudo_errors(rows, self.task, self.cfg.seed, f.numeric_offset)
            else:
                pools[parent.id] = fb.real_errors(rows)
        return minibatch, pools

    def feedback_groups(self, parents: list[Candidate]) -> list[tuple[Candidate, str]]:
        """(parent, rendered example block) groups: ``n_gradients`` per parent with feedback rows,
        ``errors_per_gradient`` rows each, drawn with a seeded RNG. Emits a ``no_errors`` event when empty."""
        s = self.cfg.search
        _, pools = self.feedback_pool(parents)
        groups = []
        for parent in parents:
            pool = pools[parent.id]
            rng = self.rng("errors", parent.id)
            for _ in range(s.n_gradients if pool else 0):
                groups.append((parent, self.example_block(rng.sample(pool, min(len(pool), s.errors_per_gradient)))))
        if parents and not groups:
            self.trace.event("no_errors", detail="no minibatch feedback rows: no updates this round")
        return groups

    def example_block(self, rows) -> str:
        return self.meta.errors(rows, evaluated=self.cfg.feedback.show_evaluation)

    @property
    def evaluated(self) -> bool:
        return self.cfg.feedback.show_evaluation
