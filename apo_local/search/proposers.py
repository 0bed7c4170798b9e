"""Proposers: how new candidate instructions are made from the beam.

``ProTeGiProposer`` (Pryzant et al., 2023): minibatch errors -> textual gradients -> edits ->
Monte-Carlo paraphrases, every step one batched optimizer call for the whole beam.
"""

from __future__ import annotations

from typing import Protocol

from apo_local.errors import ApoError
from apo_local.search.candidates import Candidate
from apo_local.search.context import SearchContext


class Proposer(Protocol):
    name: str

    def propose(self, parents: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        """New candidates (parents excluded); their ``status`` says if they were dropped."""


class ProTeGiProposer:
    name = "protegi"

    def propose(self, parents: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        s = ctx.cfg.search
        edits = self._edits(parents, ctx) if s.n_gradients > 0 else []
        proposals = edits + self._paraphrases(edits + parents, ctx)
        return self._admit_and_cap(proposals, parents, ctx)

    def _edits(self, parents: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        s = ctx.cfg.search
        minibatch = ctx.rng("minibatch").sample(ctx.train, min(s.minibatch_size, len(ctx.train)))
        ctx.trace.at("minibatch", ctx.round)
        preds = ctx.scorer.predict([(p.text, ex) for p in parents for ex in minibatch])
        groups = []  # (parent, error block) - one gradient call each
        for k, parent in enumerate(parents):
            chunk = preds[k * len(minibatch) : (k + 1) * len(minibatch)]
            errors = [(ex, pr.label) for ex, pr in zip(minibatch, chunk) if pr.label != ex.label]
            rng = ctx.rng("errors", parent.id)
            for _ in range(s.n_gradients if errors else 0):
                groups.append((parent, ctx.meta.errors(rng.sample(errors, min(len(errors), s.errors_per_gradient)))))
        if parents and not groups:
            ctx.trace.event("no_errors", detail="no minibatch errors: no gradients this round")

        replies = ctx.ask("gradient", [
            ctx.meta.render("gradient", prompt=p.text, errors=err, num_reasons=s.reasons_per_gradient) for p, err in groups
        ])
        grads = [
            (parent, err, reason)
            for (parent, err), reply in zip(groups, replies)
            for reason in ctx.parse(reply.text, "gradient")[: s.reasons_per_gradient]
        ]
        replies = ctx.ask("edit", [
            ctx.meta.render("edit", prompt=p.text, errors=err, gradient=reason, num_prompts=s.edits_per_gradient)
            for p, err, reason in grads
        ])
        return [
            Candidate(text, ctx.round, "edit", parent=parent.id, gradient=reason)
            for (parent, _, reason), reply in zip(grads, replies)
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
            for item in ctx.parse(text, "paraphrase")[:1]
        ]

    def _admit_and_cap(self, proposals: list[Candidate], parents: list[Candidate], ctx: SearchContext) -> list[Candidate]:
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
            reason = ctx.admit(c.text, by_id[root[c.id]].text if root[c.id] in by_id else "")
            if reason:
                c.status = f"rejected: {reason}"
            out.append(c)
        cap = ctx.cfg.search.max_expansion
        for parent in parents:
            mine = [c for c in out if root[c.id] == parent.id and c.status == "new"]
            if len(mine) > cap:
                keep = {c.id for c in ctx.rng("cap", parent.id).sample(mine, cap)}
                for c in mine:
                    if c.id not in keep:
                        c.status = "dropped: over max_expansion"
        return out


PROPOSERS = {"protegi": ProTeGiProposer}


def make_proposer(name: str) -> Proposer:
    if name not in PROPOSERS:
        raise ApoError(f"unknown proposer {name!r} (known: {', '.join(PROPOSERS)})")
    return PROPOSERS[name]()
