"""Melcer et al. (2025)'s one-step operator: the rewrite sees the examples and their evaluations, no gradient."""

from __future__ import annotations

from apo_local.search.proposers.base import UpdateThenParaphrase
from apo_local.search.proposers.method import Expansion
from apo_local.search.proposers.protegi import PROTEGI_KNOBS, error_group_method
from apo_local.search.reply_shapes import tagged
from apo_local.search.state import Candidate


class OneStepProposer(UpdateThenParaphrase):
    name = "one-step"

    def __init__(self, n_gradients=4, errors_per_gradient=4, edits_per_gradient=1, mc_samples=2):
        super().__init__(mc_samples, updates=n_gradients > 0)
        self.n_gradients, self.errors_per_gradient, self.edits_per_gradient = (
            n_gradients,
            errors_per_gradient,
            edits_per_gradient,
        )

    def _updates(self, parents, ctx):
        groups = ctx.feedback.groups(parents, ctx.streams, self.n_gradients, self.errors_per_gradient)
        replies = ctx.optimizer.ask(
            "one_step",
            [
                ctx.meta.render(
                    "one_step",
                    prompt=p.text,
                    errors=block,
                    num_prompts=self.edits_per_gradient,
                    evaluated=ctx.feedback.evaluated,
                )
                for p, block in groups
            ],
            shape=tagged(self.edits_per_gradient, max_tokens=ctx.optimizer.max_tokens),
        )
        return [
            Candidate(text, ctx.round, "one-step", parent=parent.id)
            for (parent, _), reply in zip(groups, replies)
            for text in ctx.optimizer.parse(reply.text, "one_step")[: self.edits_per_gradient]
        ]


def _rewrites(x: Expansion, groups: int, shown: int) -> int:
    x.optimizer.add(groups, shown, groups * x.out_max)
    return groups * x.cfg.protegi.edits_per_gradient


METHOD = error_group_method(
    "one-step", OneStepProposer, _rewrites, rank=1, knobs=PROTEGI_KNOBS - {"reasons_per_gradient"}
)
