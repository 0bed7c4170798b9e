"""Melcer et al. (2025)'s three-stage operator: critique the outputs -> feedback on the prompt -> rewrite (edit)."""

from __future__ import annotations

from apo_local.search.proposers.base import UpdateThenParaphrase, edit, reasons


class ThreeStageProposer(UpdateThenParaphrase):
    name = "three-stage"

    def __init__(self, n_gradients=4, errors_per_gradient=4, reasons_per_gradient=1, edits_per_gradient=1,
                 mc_samples=2):
        super().__init__(mc_samples, updates=n_gradients > 0)
        self.n_gradients, self.errors_per_gradient = n_gradients, errors_per_gradient
        self.reasons_per_gradient, self.edits_per_gradient = reasons_per_gradient, edits_per_gradient

    def _updates(self, parents, ctx):
        groups = ctx.feedback.groups(parents, ctx.streams, self.n_gradients, self.errors_per_gradient)
        critiques = ctx.optimizer.ask("critique", [
            ctx.meta.render("critique", prompt=p.text, errors=block, evaluated=ctx.feedback.evaluated)
            for p, block in groups])
        replies = ctx.optimizer.ask("feedback", [
            ctx.meta.render("feedback", prompt=p.text, critique=c.text.strip() or "(no critique)",
                            num_reasons=self.reasons_per_gradient)
            for (p, _), c in zip(groups, critiques)])
        notes = reasons(groups, replies, "feedback", self.reasons_per_gradient, ctx,
                        extra=lambda i: {"critique": critiques[i].text.strip()})
        return edit(notes, "three-stage", self.edits_per_gradient, ctx)
