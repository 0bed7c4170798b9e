"""ProTeGi (Pryzant et al., 2023): minibatch errors -> textual gradients -> edits -> Monte-Carlo paraphrases.

``n_gradients: 0`` leaves paraphrases only: the paper's Monte-Carlo baseline."""

from __future__ import annotations

from collections.abc import Callable

from apo_local.config.schema import ProTeGiConfig, RunConfig
from apo_local.search.proposers.base import ErrorGroupProposer, edit, reasons
from apo_local.search.proposers.method import Expansion, Method, section_keys
from apo_local.search.reply_shapes import tagged


class ProTeGiProposer(ErrorGroupProposer):
    """Errors -> ``reasons_per_gradient`` gradients per error group -> ``edits_per_gradient`` edits each."""

    name = "protegi"

    def _updates(self, parents, ctx):
        groups = self._groups(parents, ctx)
        replies = ctx.optimizer.ask(
            "gradient",
            [
                ctx.meta.render(
                    "gradient",
                    prompt=p.text,
                    errors=block,
                    num_reasons=self.reasons_per_gradient,
                    evaluated=ctx.feedback.evaluated,
                )
                for p, block in groups
            ],
            shape=tagged(self.reasons_per_gradient, max_tokens=ctx.optimizer.max_tokens),
        )
        return edit(
            reasons(groups, replies, "gradient", self.reasons_per_gradient, ctx), "edit", self.edits_per_gradient, ctx
        )


# -- the method, and the shape of its operator ablations (one-step, three-stage: the same section and checks) ---

PROTEGI_KNOBS = section_keys(ProTeGiConfig)
PROTEGI_PRESETS = {
    "smoke": {"protegi": {"n_gradients": 1, "errors_per_gradient": 2, "mc_samples": 1}},
    "demo": {"protegi": {"n_gradients": 2, "errors_per_gradient": 3, "mc_samples": 1}},
}


def no_gradients(cfg: RunConfig) -> str | None:
    return "protegi with n_gradients: 0" if cfg.protegi.n_gradients == 0 else None


def error_group_cost(updates: Callable[[Expansion, int, int], int]) -> Callable[[Expansion], int]:
    """The cost of an error-group method: the minibatch, ``updates(x, groups, shown)`` (its own calls; the updates
    they make), then the paraphrases. ``n_gradients: 0``: paraphrases of the parents only."""

    def cost(x: Expansion) -> int:
        made = updates(x, *x.error_groups()) if x.cfg.protegi.n_gradients else 0
        return made + x.paraphrases(made, x.cfg.protegi.mc_samples)

    return cost


def error_group_method(
    name: str, proposer, updates: Callable[[Expansion, int, int], int], rank: int, knobs: frozenset[str] = PROTEGI_KNOBS
) -> Method:
    """A method that reads the ``protegi`` section: ProTeGi and its update-operator ablations."""
    return Method(
        name=name,
        proposer=proposer,
        knobs={"protegi": knobs},
        cost=error_group_cost(updates),
        presets=PROTEGI_PRESETS,
        data_free=no_gradients,
        makes_updates=lambda cfg: cfg.protegi.n_gradients > 0,
        paraphrase_knob=lambda cfg: "protegi.mc_samples" if cfg.protegi.mc_samples else None,
        rank=rank,
    )


def _gradients_then_edits(x: Expansion, groups: int, shown: int) -> int:
    x.optimizer.add(groups, shown, groups * x.out_max)  # gradients
    return x.edits(groups, shown)


METHOD = error_group_method("protegi", ProTeGiProposer, _gradients_then_edits, rank=0)
