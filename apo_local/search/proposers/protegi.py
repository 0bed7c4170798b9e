"""ProTeGi (Pryzant et al., 2023): minibatch errors -> textual gradients -> edits -> Monte-Carlo paraphrases.

``n_gradients: 0`` leaves paraphrases only: the paper's Monte-Carlo baseline."""

from __future__ import annotations

from apo_local.search.proposers.base import ErrorGroupProposer, edit, reasons
from apo_local.search.reply_shapes import tagged


class ProTeGiProposer(ErrorGroupProposer):
    """Errors -> ``reasons_per_gradient`` gradients per error group -> ``edits_per_gradient`` edits each."""

    name = "protegi"

    def _updates(self, parents, ctx):
        groups = self._groups(parents, ctx)
        replies = ctx.optimizer.ask("gradient", [
            ctx.meta.render("gradient", prompt=p.text, errors=block, num_reasons=self.reasons_per_gradient,
                            evaluated=ctx.feedback.evaluated) for p, block in groups],
            shape=tagged(self.reasons_per_gradient, max_tokens=ctx.optimizer.max_tokens))
        return edit(reasons(groups, replies, "gradient", self.reasons_per_gradient, ctx), "edit",
                    self.edits_per_gradient, ctx)
