"""Data-free proposals (Melcer et al., 2025): sampled rewrites of each parent from one meta-prompt, no data."""

from __future__ import annotations

from apo_local.config.schema import SamplingConfig
from apo_local.search.proposers.base import UpdateThenParaphrase
from apo_local.search.proposers.method import Expansion, Method, section_keys
from apo_local.search.reply_shapes import tagged
from apo_local.search.state import Candidate


class DataFreeProposer(UpdateThenParaphrase):
    """``samples_per_parent`` rewrites per parent from the ``template`` meta-prompt."""

    name = template = "?"

    def __init__(self, samples_per_parent=4, mc_samples=2):
        super().__init__(mc_samples, updates=samples_per_parent > 0)
        self.samples_per_parent = samples_per_parent

    def _updates(self, parents, ctx):
        replies = ctx.optimizer.ask(
            self.template,
            [ctx.meta.render(self.template, prompt=p.text) for p in parents],
            n=self.samples_per_parent,
            shape=tagged(1, max_tokens=ctx.optimizer.max_tokens),
        )
        return [
            Candidate(item, ctx.round, self.name, parent=parent.id)
            for parent, reply in zip(parents, replies)
            for item in ctx.optimizer.sample_items(reply, self.template)
        ]


def data_free_method(proposer: type[DataFreeProposer], rank: int) -> Method:
    """A data-free method: its own section (``samples_per_parent``, ``mc_samples``), named after it."""
    name = proposer.name

    def cost(x: Expansion) -> int:
        s = getattr(x.cfg, name)
        x.optimizer.add(x.parents, x.meta, x.parents * s.samples_per_parent * x.out_max)
        updates = x.parents * s.samples_per_parent
        return updates + x.paraphrases(updates, s.mc_samples)

    return Method(
        name=name,
        proposer=proposer,
        knobs={name: section_keys(SamplingConfig)},
        cost=cost,
        presets={
            "smoke": {name: {"samples_per_parent": 1, "mc_samples": 1}},
            "demo": {name: {"samples_per_parent": 2, "mc_samples": 1}},
        },
        data_free=lambda cfg: f"proposer {name}",
        makes_updates=lambda cfg: getattr(cfg, name).samples_per_parent > 0,
        paraphrase_knob=lambda cfg: f"{name}.mc_samples" if getattr(cfg, name).mc_samples else None,
        rank=rank,
    )
