"""Melcer et al. (2025)'s three-stage operator: critique the outputs -> feedback on the prompt -> rewrite (edit)."""

from __future__ import annotations

from apo_local.search.proposers.base import ErrorGroupProposer, edit, reasons
from apo_local.search.proposers.method import Expansion
from apo_local.search.proposers.protegi import error_group_method
from apo_local.search.reply_shapes import tagged


class ThreeStageProposer(ErrorGroupProposer):
    name = "three-stage"

    def _updates(self, parents, ctx):
        groups = self._groups(parents, ctx)
        critiques = ctx.optimizer.ask(
            "critique",
            [
                ctx.meta.render("critique", prompt=p.text, errors=block, evaluated=ctx.feedback.evaluated)
                for p, block in groups
            ],
            keep_truncated=True,
        )  # free text read as context, never a candidate
        replies = ctx.optimizer.ask(
            "feedback",
            [
                ctx.meta.render(
                    "feedback",
                    prompt=p.text,
                    critique=c.text.strip() or "(no critique)",
                    num_reasons=self.reasons_per_gradient,
                )
                for (p, _), c in zip(groups, critiques)
            ],
            shape=tagged(self.reasons_per_gradient, max_tokens=ctx.optimizer.max_tokens),
        )
        notes = reasons(
            groups,
            replies,
            "feedback",
            self.reasons_per_gradient,
            ctx,
            extra=lambda i: {"critique": critiques[i].text.strip()},
        )
        return edit(notes, "three-stage", self.edits_per_gradient, ctx)


def _critique_feedback_edit(x: Expansion, groups: int, shown: int) -> int:
    x.optimizer.add(groups, shown, groups * x.out_max)  # critiques
    x.optimizer.add(groups, x.meta + x.out_max, groups * x.out_max)  # feedback on the prompt
    return x.edits(groups, shown)


METHOD = error_group_method("three-stage", ThreeStageProposer, _critique_feedback_edit, rank=2)
