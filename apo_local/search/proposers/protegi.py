"""ProTeGi (Pryzant et al., 2023): minibatch errors -> textual gradients -> edits -> Monte-Carlo paraphrases.

``n_gradients: 0`` leaves paraphrases only: the paper's Monte-Carlo baseline."""

from __future__ import annotations

from apo_local.search.proposers.base import UpdateThenParaphrase, edit, reasons


class ProTeGiProposer(UpdateThenParaphrase):
    """Errors -> ``reasons_per_gradient`` gradients per error group -> ``edits_per_gradient`` edits each."""

    name = "protegi"

    def __init__(self, n_gradients=4, errors_per_gradient=4, reasons_per_gradient=1, edits_per_gradient=1,
                 mc_samples=2):
        super().__init__(mc_samples, updates=n_gradients > 0)
        self.n_gradients, self.errors_per_gradient = n_gradients, errors_per_gradient
        self.reasons_per_gradient, self.edits_per_gradient = reasons_per_gradient, edits_per_gradient

    def _updates(self, parents, ctx):
        groups = ctx.feedback.groups(parents, ctx.streams, self.n_gradients, self.errors_per_gradient)
        replies = ctx.optimizer.ask("gradient", [
            ctx.meta.render("gradient", prompt=p.text, errors=block, num_reasons=self.reasons_per_gradient,
                            evaluated=ctx.feedback.evaluated) for p, block in groups])
        return edit(reasons(groups, replies, "gradient", self.reasons_per_gradient, ctx), "edit",
                    self.edits_per_gradient, ctx)
