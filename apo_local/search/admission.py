"""Which proposals become candidates: no duplicates, nothing degenerate, too long for the target or over the
prompt token budget (``search.max_prompt_tokens``), nothing that fails candidate hygiene (``hygiene.py``), at
most ``max_expansion`` new candidates per beam parent (a seeded pick). Every proposal is counted (``proposals``,
``proposals_accepted``, ``rejected:<rule>``)."""

from __future__ import annotations

from collections.abc import Sequence

from apo_local.engine import Trace
from apo_local.search.hygiene import Hygiene, rule
from apo_local.search.parsing import is_degenerate
from apo_local.search.state import Candidate, Status
from apo_local.search.streams import Streams
from apo_local.tasks import Example, Task

ANSWER_ROOM = 16  # tokens left for the answer after the rendered prompt
PROBE = Example(id="probe", input="", label="")
OVER_BUDGET = "over the prompt token budget"  # the rule name of search.max_prompt_tokens' rejections


def prompt_tokens(task: Task, engine, texts: Sequence[str]) -> list[int]:
    """Tokens of each prompt text rendered with an empty input (what every example's prompt shares): the size
    the target's context, ``search.max_prompt_tokens`` and the length objective (``acceptance/length.py``) read."""
    return engine.count_tokens([task.render(t, PROBE) for t in texts]) if texts else []


class Admission:
    def __init__(
        self,
        task: Task,
        target,
        trace: Trace,
        max_expansion: int,
        hygiene: Hygiene | None = None,
        max_prompt_tokens: int | None = None,
    ):
        self.task, self.target, self.trace, self.max_expansion = task, target, trace, max_expansion
        self.hygiene, self.max_prompt_tokens = hygiene, max_prompt_tokens

    def reason(self, text: str, parent: str) -> str | None:
        """Why a proposed instruction can't become a candidate (degenerate, hygiene, too long), or None."""
        reason = is_degenerate(text, parent)
        if reason is None and self.hygiene is not None:
            reason = self.hygiene.reason(text, parent)
        if reason is None:
            n = prompt_tokens(self.task, self.target, [text])[0]
            limit = self.target.max_model_len - ANSWER_ROOM
            if n > limit:
                reason = f"too long for the target's context ({n} tokens > {limit})"
            elif self.max_prompt_tokens is not None and n > self.max_prompt_tokens:
                reason = f"{OVER_BUDGET} ({n} tokens > search.max_prompt_tokens {self.max_prompt_tokens})"
        self.trace.count("proposals")
        if reason:
            self.trace.reject(rule(reason))
            self.trace.event("candidate_rejected", reason=reason, rule=rule(reason), text=text[:300])
        else:
            self.trace.count("proposals_accepted")
        return reason

    def admit_and_cap(self, proposals: list[Candidate], parents: list[Candidate], streams: Streams) -> list[Candidate]:
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
            reason = self.reason(c.text, by_id[root[c.id]].text if root[c.id] in by_id else "")
            if reason:
                c.mark(Status.REJECTED, reason)
            out.append(c)
        for parent in parents:
            mine = [c for c in out if root[c.id] == parent.id and c.status == Status.NEW]
            if len(mine) > self.max_expansion:
                keep = {c.id for c in streams.rng("cap", parent.id).sample(mine, self.max_expansion)}
                for c in mine:
                    if c.id not in keep:
                        c.mark(Status.DROPPED, "over max_expansion")
        return out
