"""The ABO proposer (Ma et al., 2024): steps + demonstration; revise the first step the target failed.

The prompt form and the step-compliance heuristic are in ``abo_format.py`` (with the method's notes)."""

from __future__ import annotations

from apo_local.engine import GenerationRequest
from apo_local.search.context import RoundContext
from apo_local.search.proposers.abo_format import (SHOW_WORK, AboPrompt, blamed_step, fallback_steps, format_abo,
                                                   numbered, parse_abo, strip_marker)
from apo_local.search.reply_shapes import abo_steps, tagged
from apo_local.search.state import Candidate


class ABOProposer:
    name = "abo"

    def __init__(self, init_samples=4, revise_samples=4, errors_per_revision=4, demonstration=True, work_tokens=128):
        self.init_samples, self.revise_samples, self.errors_per_revision = init_samples, revise_samples, errors_per_revision
        self.demonstration, self.work_tokens = demonstration, work_tokens

    def propose(self, parents: list[Candidate], ctx: RoundContext) -> list[Candidate]:
        parsed = [(p, parse_abo(p.text)) for p in parents]
        fresh = [p for p, a in parsed if not a.steps]
        ready = [(p, a) for p, a in parsed if a.steps]
        return ctx.admit(self._initial(fresh, ctx) + self._revise(ready, ctx), parents)

    # -- 1. steps + demonstration from a plain instruction ----------------------------------------

    def _initial(self, parents: list[Candidate], ctx: RoundContext) -> list[Candidate]:
        if not parents:
            return []
        ex = ctx.feedback.shown(ctx.streams.rng("abo-demo").choice(ctx.train))
        replies = ctx.optimizer.ask("abo_init", [
            ctx.meta.render("abo_init", prompt=p.text, input=ex.input.strip(), label=ex.label,
                            demonstration=self.demonstration) for p in parents], n=self.init_samples,
            shape=abo_steps(self.demonstration))
        out = []
        for parent, reply in zip(parents, replies):
            for item in ctx.optimizer.sample_items(reply, "abo_init"):
                a = parse_abo(item)
                steps = a.steps or fallback_steps(item)
                if steps:
                    out.append(Candidate(format_abo(steps, a.demonstration, self.demonstration), ctx.round,
                                         "abo-init", parent=parent.id))
        return out

    # -- 2-4. find the first failed step, revise it (and the demonstration) -----------------------

    def _revise(self, ready: list[tuple[Candidate, AboPrompt]], ctx: RoundContext) -> list[Candidate]:
        if not ready:
            return []
        work = self._show_work(ready, ctx)
        if not work:
            ctx.trace.event("no_errors", detail="abo: no minibatch errors: no revisions this round")
            return []
        asks = self._blame(ready, work, ctx)
        replies = ctx.optimizer.ask("abo_revise", [
            ctx.meta.render("abo_revise", steps=numbered(a.steps), step=step, step_text=a.steps[step - 1],
                            errors=ctx.feedback.block([(ex, f"{pred or '(no answer)'}\nWork: {' '.join(w.split())[:400]}")
                                                       for ex, pred, w in rows]))
            for _, a, step, rows, _ in asks], shape=tagged(1))
        revised = []
        for (parent, a, step, rows, why), reply in zip(asks, replies):
            for item in ctx.optimizer.parse(reply.text, "abo_revise")[:1]:
                new_step = strip_marker(item, step)
                if new_step:
                    steps = list(a.steps)
                    steps[step - 1] = new_step
                    revised.append((parent, a, steps, rows, why))
        demos = self._demonstrations(revised, ctx)
        return [Candidate(format_abo(steps, demo, self.demonstration), ctx.round, "abo", parent=parent.id, gradient=why)
                for (parent, _, steps, _, why), demo in zip(revised, demos)]

    def _show_work(self, ready, ctx: RoundContext) -> dict[str, list[tuple]]:
        """Per parent id: (example, prediction, work text) for a seeded sample of its wrong rows, the
        target narrating its steps (one generate batch)."""
        pools = ctx.feedback.pools([p for p, _ in ready], ctx.streams)
        rows = []  # (parent, example, prediction)
        for parent, _ in ready:
            pool = pools[parent.id]
            sample = ctx.streams.rng("abo-work", parent.id).sample(
                pool, min(len(pool), self.errors_per_revision * self.revise_samples))
            rows += [(parent, ex, pred) for ex, pred in sample]
        if not rows:
            return {}
        ctx.budget.check()
        ctx.trace.at("abo_work", ctx.round)
        gens = ctx.scorer.engine.generate([
            GenerationRequest(ctx.task.render(parent.text + "\n\n" + SHOW_WORK, ex), temperature=0.0,
                              max_tokens=self.work_tokens) for parent, ex, _ in rows])
        out: dict[str, list[tuple]] = {}
        for (parent, ex, pred), g in zip(rows, gens):
            out.setdefault(parent.id, []).append((ex, pred, g.text))
        return out

    def _blame(self, ready, work, ctx: RoundContext) -> list[tuple]:
        """(parent, prompt, blamed step, example rows, why) asks: ``revise_samples`` per parent."""
        asks = []
        for parent, a in ready:
            mine = work.get(parent.id)
            if not mine:
                continue
            step, blame = blamed_step(a.steps, [w for _, _, w in mine])
            failed = [row for row, b in zip(mine, blame) if b == step]
            rng = ctx.streams.rng("abo-errors", parent.id)
            why = (f"step {step} was the first step not followed on {len(failed)} of {len(mine)} wrong examples: "
                   f"{a.steps[step - 1]}")
            for _ in range(self.revise_samples):
                asks.append((parent, a, step, rng.sample(failed, min(len(failed), self.errors_per_revision)), why))
        return asks

    def _demonstrations(self, revised, ctx: RoundContext) -> list[str | None]:
        demos: list[str | None] = [a.demonstration for _, a, _, _, _ in revised]
        if self.demonstration and revised:
            replies = ctx.optimizer.ask("abo_demo", [
                ctx.meta.render("abo_demo", steps=numbered(steps), input=rows[0][0].input.strip(), label=rows[0][0].label)
                for _, _, steps, rows, _ in revised], shape=tagged(1))
            for i, reply in enumerate(replies):
                items = ctx.optimizer.parse(reply.text, "abo_demo")[:1]
                if items:
                    demos[i] = items[0]
        return demos
