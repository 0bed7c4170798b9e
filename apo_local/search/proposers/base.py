"""The shared shape of the update-then-paraphrase proposers (every shipped one but ABO)."""

from __future__ import annotations

from typing import NamedTuple

from apo_local.search.context import RoundContext
from apo_local.search.reply_shapes import tagged
from apo_local.search.state import Candidate


class Reason(NamedTuple):
    """One reason an update is asked for: a gradient (or three-stage feedback) on one group of examples."""

    parent: Candidate
    examples: str  # the example block the optimizer was shown
    text: str  # the reason (gradient) or feedback
    extra: dict  # more Candidate fields for the updates it makes (e.g. the critique)


class UpdateThenParaphrase:
    """updates (subclass) -> Monte-Carlo paraphrases of updates and parents -> admit and cap."""

    name = "?"

    def __init__(self, mc_samples: int = 2, updates: bool = True):
        self.mc_samples, self.with_updates = mc_samples, updates

    def propose(self, parents: list[Candidate], ctx: RoundContext) -> list[Candidate]:
        updates = self._updates(parents, ctx) if self.with_updates else []
        return ctx.admit(updates + self._paraphrases(updates + parents, ctx), parents)

    def _updates(self, parents: list[Candidate], ctx: RoundContext) -> list[Candidate]:
        raise NotImplementedError

    def _paraphrases(self, sources: list[Candidate], ctx: RoundContext) -> list[Candidate]:
        if self.mc_samples == 0 or not sources:
            return []
        replies = ctx.optimizer.ask(
            "paraphrase", [ctx.meta.render("paraphrase", prompt=c.text) for c in sources], n=self.mc_samples
        )
        return [
            Candidate(item, ctx.round, "paraphrase", parent=src.id, gradient=src.gradient)
            for src, reply in zip(sources, replies)
            for item in ctx.optimizer.sample_items(reply, "paraphrase", 1, tagged=False)
        ]


class ErrorGroupProposer(UpdateThenParaphrase):
    """An update operator fed by error groups: ``n_gradients`` groups of ``errors_per_gradient`` rows per
    parent, ``reasons_per_gradient`` reasons per group, ``edits_per_gradient`` edits per reason."""

    def __init__(
        self, n_gradients=4, errors_per_gradient=4, reasons_per_gradient=1, edits_per_gradient=1, mc_samples=2
    ):
        super().__init__(mc_samples, updates=n_gradients > 0)
        self.n_gradients, self.errors_per_gradient = n_gradients, errors_per_gradient
        self.reasons_per_gradient, self.edits_per_gradient = reasons_per_gradient, edits_per_gradient

    def _groups(self, parents: list[Candidate], ctx: RoundContext) -> list[tuple[Candidate, str]]:
        return ctx.feedback.groups(parents, ctx.streams, self.n_gradients, self.errors_per_gradient)


def reasons(
    groups: list[tuple[Candidate, str]], replies, purpose: str, limit: int, ctx: RoundContext, extra=lambda i: {}
) -> list[Reason]:
    """Up to ``limit`` parsed items per (parent, example block) group, as ``Reason`` tuples."""
    return [
        Reason(parent, block, item, extra(i))
        for i, ((parent, block), reply) in enumerate(zip(groups, replies))
        for item in ctx.optimizer.parse(reply.text, purpose)[:limit]
    ]


def edit(reasons_: list[Reason], operator: str, per_reason: int, ctx: RoundContext) -> list[Candidate]:
    """One batched "edit" call: each (parent, examples, reason or feedback, extra fields) -> up to
    ``per_reason`` rewritten prompts made by ``operator``."""
    replies = ctx.optimizer.ask(
        "edit",
        [
            ctx.meta.render(
                "edit",
                prompt=p.text,
                errors=block,
                gradient=why,
                num_prompts=per_reason,
                evaluated=ctx.feedback.evaluated,
            )
            for p, block, why, _ in reasons_
        ],
        shape=tagged(per_reason, max_tokens=ctx.optimizer.max_tokens),
    )
    return [
        Candidate(text, ctx.round, operator, parent=parent.id, gradient=why, **extra)
        for (parent, _, why, extra), reply in zip(reasons_, replies)
        for text in ctx.optimizer.parse(reply.text, "edit")[:per_reason]
    ]
