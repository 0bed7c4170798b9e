"""Proposers: how new candidate instructions are made from the beam.

Every proposer is one step of the same loop (``BeamSearch``): ``propose(parents, ctx)`` returns new
candidates; the selector (or the acceptance rule) then picks the beam. Each optimizer step is one
batched call for the whole beam.

``protegi`` (Pryzant et al., 2023, the default): minibatch errors -> textual gradients -> edits ->
Monte-Carlo paraphrases. ``n_gradients: 0`` leaves paraphrases only: the paper's Monte-Carlo baseline.

Update-operator ablations of Melcer et al. (2025), *Textual gradients are a flawed metaphor*; each
replaces the gradient -> edit pair and keeps everything else (paraphrases, admission, cap):

* ``one-step``: rewrite the prompt directly from the examples and their evaluations;
* ``three-stage``: critique the outputs -> turn the critique into feedback on the prompt -> rewrite;
* ``rewrite``: data-free paraphrase of the prompt (no examples at all);
* ``improve``: data-free "write a better prompt" (no examples at all).

``abo``: Automatic Behavior Optimization (Ma et al., 2024), see ``search/abo.py``.

What the data-driven proposers are shown (true or wrong labels, real or pseudo errors, outputs with or
without evaluation) is the ``feedback`` config section, applied once in ``SearchContext.feedback_groups``.
"""

from __future__ import annotations

from typing import Protocol

from apo_local.errors import ApoError
from apo_local.search.abo import ABOProposer
from apo_local.search.candidates import Candidate
from apo_local.search.context import SearchContext


class Proposer(Protocol):
    name: str

    def propose(self, parents: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        """New candidates (parents excluded); their ``status`` says if they were dropped."""


class UpdateThenParaphrase:
    """updates (subclass) -> Monte-Carlo paraphrases of updates and parents -> admit and cap."""

    name = "?"

    def propose(self, parents: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        s = ctx.cfg.search
        updates = self._updates(parents, ctx) if s.n_gradients > 0 else []
        proposals = updates + self._paraphrases(updates + parents, ctx)
        return ctx.admit_and_cap(proposals, parents)

    def _updates(self, parents: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        raise NotImplementedError

    def _edits(self, feedback: list[tuple[Candidate, str, str, dict]], operator: str,
               ctx: SearchContext) -> list[Candidate]:
        """One batched "edit" call: each (parent, errors, gradient or feedback, extra Candidate fields)
        -> up to ``edits_per_gradient`` rewritten prompts made by ``operator``."""
        s = ctx.cfg.search
        replies = ctx.ask("edit", [
            ctx.meta.render("edit", prompt=p.text, errors=err, gradient=fb, num_prompts=s.edits_per_gradient,
                            evaluated=ctx.evaluated)
            for p, err, fb, _ in feedback
        ])
        return [
            Candidate(text, ctx.round, operator, parent=parent.id, gradient=fb, **extra)
            for (parent, _, fb, extra), reply in zip(feedback, replies)
            for text in ctx.parse(reply.text, "edit")[: s.edits_per_gradient]
        ]

    def _paraphrases(self, sources: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        n = ctx.cfg.search.mc_samples
        if n == 0 or not sources:
            return []
        replies = ctx.ask("paraphrase", [ctx.meta.render("paraphrase", prompt=c.text) for c in sources], n=n)
        return [
            Candidate(item, ctx.round, "paraphrase", parent=src.id, gradient=src.gradient)
            for src, reply in zip(sources, replies)
            for text in reply.texts
            for item in ctx.parse(text, "paraphrase", tagged=False)[:1]
        ]


class ProTeGiProposer(UpdateThenParaphrase):
    """Errors -> ``reasons_per_gradient`` gradients per error group -> ``edits_per_gradient`` edits each."""

    name = "protegi"

    def _updates(self, parents, ctx):
        s = ctx.cfg.search
        groups = ctx.feedback_groups(parents)
        replies = ctx.ask("gradient", [
            ctx.meta.render("gradient", prompt=p.text, errors=err, num_reasons=s.reasons_per_gradient,
                            evaluated=ctx.evaluated) for p, err in groups
        ])
        grads = [
            (parent, err, reason, {})
            for (parent, err), reply in zip(groups, replies)
            for reason in ctx.parse(reply.text, "gradient")[: s.reasons_per_gradient]
        ]
        return self._edits(grads, "edit", ctx)


class OneStepProposer(UpdateThenParaphrase):
    """Melcer et al.'s one-step operator: the rewrite sees the examples and their evaluations, no gradient."""

    name = "one-step"

    def _updates(self, parents, ctx):
        s = ctx.cfg.search
        groups = ctx.feedback_groups(parents)
        replies = ctx.ask("one_step", [
            ctx.meta.render("one_step", prompt=p.text, errors=err, num_prompts=s.edits_per_gradient,
                            evaluated=ctx.evaluated) for p, err in groups
        ])
        return [
            Candidate(text, ctx.round, "one-step", parent=parent.id)
            for (parent, _), reply in zip(groups, replies)
            for text in ctx.parse(reply.text, "one_step")[: s.edits_per_gradient]
        ]


class ThreeStageProposer(UpdateThenParaphrase):
    """Melcer et al.'s three-stage operator: critique the outputs -> feedback on the prompt -> rewrite (edit)."""

    name = "three-stage"

    def _updates(self, parents, ctx):
        s = ctx.cfg.search
        groups = ctx.feedback_groups(parents)
        critiques = ctx.ask("critique", [
            ctx.meta.render("critique", prompt=p.text, errors=err, evaluated=ctx.evaluated) for p, err in groups
        ])
        replies = ctx.ask("feedback", [
            ctx.meta.render("feedback", prompt=p.text, critique=c.text.strip() or "(no critique)",
                            num_reasons=s.reasons_per_gradient)
            for (p, _), c in zip(groups, critiques)
        ])
        notes = [
            (parent, err, note, {"critique": crit.text.strip()})
            for (parent, err), crit, reply in zip(groups, critiques, replies)
            for note in ctx.parse(reply.text, "feedback")[: s.reasons_per_gradient]
        ]
        return self._edits(notes, "three-stage", ctx)


class _DataFree(UpdateThenParaphrase):
    """``n_gradients * edits_per_gradient`` sampled rewrites per parent from one meta-prompt, no data."""

    template = "?"

    def _updates(self, parents, ctx):
        s = ctx.cfg.search
        n = s.n_gradients * s.edits_per_gradient
        replies = ctx.ask(self.template, [ctx.meta.render(self.template, prompt=p.text) for p in parents], n=n)
        return [
            Candidate(item, ctx.round, self.name, parent=parent.id)
            for parent, reply in zip(parents, replies)
            for text in reply.texts
            for item in ctx.parse(text, self.template)[:1]
        ]


class RewriteProposer(_DataFree):
    name, template = "rewrite", "rewrite"


class ImproveProposer(_DataFree):
    name, template = "improve", "improve"


PROPOSERS = {
    "protegi": ProTeGiProposer,
    "one-step": OneStepProposer,
    "three-stage": ThreeStageProposer,
    "rewrite": RewriteProposer,
    "improve": ImproveProposer,
    "abo": ABOProposer,
}


def make_proposer(name: str) -> Proposer:
    if name not in PROPOSERS:
        raise ApoError(f"unknown proposer {name!r} (known: {', '.join(PROPOSERS)})")
    return PROPOSERS[name]()
