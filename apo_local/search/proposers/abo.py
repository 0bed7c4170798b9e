"""The ABO proposer (Ma et al., 2024): steps + demonstration; the optimizer judges, step by step, the
target's executed work on wrong examples, and the first failed step is revised.

The prompt form, the judgement's reading and the method's notes are in ``abo_format.py``."""

from __future__ import annotations

from apo_local.config.schema import ABOConfig, RunConfig
from apo_local.engine import GenerationRequest
from apo_local.search.context import RoundContext
from apo_local.search.proposers.abo_format import (
    SHOW_WORK,
    AboPrompt,
    blamed_step,
    fallback_steps,
    format_abo,
    numbered,
    parse_abo,
    parse_judgement,
    strip_marker,
)
from apo_local.search.proposers.method import Expansion, Method, TargetAnswer, section_keys
from apo_local.search.reply_shapes import abo_steps, tagged
from apo_local.search.state import Candidate


class ABOProposer:
    name = "abo"

    def __init__(
        self,
        init_samples=4,
        revise_samples=4,
        errors_per_revision=4,
        demonstration=True,
        work_tokens=128,
        answer="generate",
    ):
        self.init_samples, self.revise_samples, self.errors_per_revision = (
            init_samples,
            revise_samples,
            errors_per_revision,
        )
        self.demonstration, self.work_tokens, self.answer = demonstration, work_tokens, answer
        self.works = answer == "generate"  # the prompt asks the target to work through the steps (format_abo)

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
        replies = ctx.optimizer.ask(
            "abo_init",
            [
                ctx.meta.render(
                    "abo_init", prompt=p.text, input=ex.input.strip(), label=ex.label, demonstration=self.demonstration
                )
                for p in parents
            ],
            n=self.init_samples,
            shape=abo_steps(self.demonstration, max_tokens=ctx.optimizer.max_tokens),
        )
        out = []
        for parent, reply in zip(parents, replies):
            for item in ctx.optimizer.sample_items(reply, "abo_init"):
                a = parse_abo(item)
                steps = a.steps or fallback_steps(item)
                if steps:
                    out.append(
                        Candidate(
                            format_abo(steps, a.demonstration, self.demonstration, self.works),
                            ctx.round,
                            "abo-init",
                            parent=parent.id,
                        )
                    )
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
        if not asks:
            return []
        replies = ctx.optimizer.ask(
            "abo_revise",
            [
                ctx.meta.render(
                    "abo_revise",
                    steps=numbered(a.steps),
                    step=step,
                    step_text=a.steps[step - 1],
                    errors=ctx.feedback.block(
                        [(ex, f"{pred or '(no answer)'}\nWork: {' '.join(w.split())[:400]}") for ex, pred, w in rows]
                    ),
                )
                for _, a, step, rows, _ in asks
            ],
            shape=tagged(1, max_tokens=ctx.optimizer.max_tokens),
        )
        revised = []
        for (parent, a, step, rows, why), reply in zip(asks, replies):
            for item in ctx.optimizer.parse(reply.text, "abo_revise")[:1]:
                new_step = strip_marker(item, step)
                if new_step:
                    steps = list(a.steps)
                    steps[step - 1] = new_step
                    revised.append((parent, a, steps, rows, why))
        demos = self._demonstrations(revised, ctx)
        return [
            Candidate(
                format_abo(steps, demo, self.demonstration, self.works),
                ctx.round,
                "abo",
                parent=parent.id,
                gradient=why,
            )
            for (parent, _, steps, _, why), demo in zip(revised, demos)
        ]

    def _show_work(self, ready, ctx: RoundContext) -> dict[str, list[tuple]]:
        """Per parent id: (example, prediction, work text) for a seeded sample of its wrong rows. In generate
        mode the work is what the target wrote when it answered (the scorer's memo: no new engine call);
        in the logprobs ablation the target is asked to narrate its steps (one generate batch)."""
        pools = ctx.feedback.pools([p for p, _ in ready], ctx.streams)
        rows = []  # (parent, example, prediction)
        for parent, _ in ready:
            pool = pools[parent.id]
            sample = ctx.streams.rng("abo-work", parent.id).sample(
                pool, min(len(pool), self.errors_per_revision * self.revise_samples)
            )
            rows += [(parent, ex, pred) for ex, pred in sample]
        if not rows:
            return {}
        if self.answer == "generate":
            works = [p.raw for p in ctx.scorer.predict([(parent.text, ex) for parent, ex, _ in rows])]
        else:
            ctx.trace.at("abo_work", ctx.round)
            works = [
                g.text
                for g in ctx.scorer.engine.generate(
                    [
                        GenerationRequest(
                            ctx.task.render(parent.text + "\n\n" + SHOW_WORK, ex),
                            temperature=0.0,
                            max_tokens=self.work_tokens,
                        )
                        for parent, ex, _ in rows
                    ]
                )
            ]
        out: dict[str, list[tuple]] = {}
        for (parent, ex, pred), work in zip(rows, works):
            out.setdefault(parent.id, []).append((ex, pred, work))
        return out

    def _judge(self, ready, work, ctx: RoundContext) -> dict[str, list[int | None]]:
        """Per parent id, per wrong row: the first step the optimizer judged not followed (0: all followed,
        None: no readable judgement). One optimizer batch for the whole beam."""
        jobs = [(parent, a, row) for parent, a in ready for row in work.get(parent.id, [])]
        replies = ctx.optimizer.ask(
            "abo_check",
            [
                ctx.meta.render(
                    "abo_check",
                    steps=numbered(a.steps),
                    n_steps=len(a.steps),
                    input=ex.input.strip(),
                    label=ex.label,
                    work=" ".join(w.split())[:600] or "(nothing)",
                    prediction=pred or "(no answer)",
                )
                for _, a, (ex, pred, w) in jobs
            ],
        )
        out: dict[str, list[int | None]] = {}
        for (parent, a, _), reply in zip(jobs, replies):
            verdict = parse_judgement(reply.text, len(a.steps))
            if verdict is None:
                ctx.trace.event("parse_failure", purpose="abo_check", reason="no step verdicts", reply=reply.text[:300])
            out.setdefault(parent.id, []).append(verdict)
        return out

    def _blame(self, ready, work, ctx: RoundContext) -> list[tuple]:
        """(parent, prompt, blamed step, example rows, why) asks: ``revise_samples`` per parent."""
        verdicts = self._judge(ready, work, ctx)
        asks = []
        for parent, a in ready:
            judged = [(row, v) for row, v in zip(work.get(parent.id, []), verdicts.get(parent.id, [])) if v is not None]
            if not judged:
                continue
            step, blame = blamed_step(len(a.steps), [v for _, v in judged])
            failed = [row for (row, _), b in zip(judged, blame) if b == step]
            rng = ctx.streams.rng("abo-errors", parent.id)
            why = (
                f"step {step} was judged the first step not followed on {len(failed)} of {len(judged)} "
                f"wrong examples: {a.steps[step - 1]}"
            )
            for _ in range(self.revise_samples):
                asks.append((parent, a, step, rng.sample(failed, min(len(failed), self.errors_per_revision)), why))
        return asks

    def _demonstrations(self, revised, ctx: RoundContext) -> list[str | None]:
        demos: list[str | None] = [a.demonstration for _, a, _, _, _ in revised]
        if self.demonstration and revised:
            replies = ctx.optimizer.ask(
                "abo_demo",
                [
                    ctx.meta.render(
                        "abo_demo", steps=numbered(steps), input=rows[0][0].input.strip(), label=rows[0][0].label
                    )
                    for _, _, steps, rows, _ in revised
                ],
                shape=tagged(1, max_tokens=ctx.optimizer.max_tokens),
            )
            for i, reply in enumerate(replies):
                items = ctx.optimizer.parse(reply.text, "abo_demo")[:1]
                if items:
                    demos[i] = items[0]
        return demos


# -- the method ---------------------------------------------------------------------------------------------


def _cost(x: Expansion) -> int:
    a, opt, out_max = x.cfg.abo, x.optimizer, x.out_max
    no_steps = not parse_abo(x.cfg.search.initial_prompt or "").steps
    init = x.parents * a.init_samples if no_steps else 0  # steps written first (later rounds: for the initial
    opt.add(x.parents if no_steps else 0, x.meta + x.row, init * out_max)  # prompt, when the beam kept it)
    if x.round == 1 and no_steps:
        return init
    x.target.add(x.parents * x.cfg.search.minibatch_size, x.target_in)
    work = x.parents * a.errors_per_revision * a.revise_samples
    if a.answer == "logprobs":  # the ablation narrates separately; generate mode reuses the answers' work
        x.target.add(work, x.target_in + 40, work * a.work_tokens)
    opt.add(work, x.meta + x.row + a.work_tokens, work * out_max)  # step-by-step judgements
    asks = x.parents * a.revise_samples
    opt.add(asks, x.meta + a.errors_per_revision * (x.row + a.work_tokens), asks * out_max)
    if a.demonstration:
        opt.add(asks, x.meta + x.row, asks * out_max)
    return asks + init


def _answer(cfg: RunConfig) -> TargetAnswer:
    """``abo.answer`` decides: generate (the work, then an explicit final answer line) or the label's log-probs."""
    a = cfg.abo
    return TargetAnswer(
        a.answer, max(cfg.scoring.max_tokens, a.work_tokens), "final-line" if a.answer == "generate" else "label"
    )


def _refuse(cfg: RunConfig) -> str | None:
    if not cfg.feedback.show_evaluation:
        return "feedback.show_evaluation: false: abo revises the steps that failed on wrong examples; remove it"
    return None


METHOD = Method(
    name="abo",
    proposer=ABOProposer,
    knobs={"abo": section_keys(ABOConfig)},
    cost=_cost,
    presets={
        "smoke": {"abo": {"init_samples": 1, "revise_samples": 1, "errors_per_revision": 2, "work_tokens": 48}},
        "demo": {"abo": {"init_samples": 2, "revise_samples": 2, "errors_per_revision": 3, "work_tokens": 96}},
    },
    answer=_answer,
    refuse=_refuse,
    rank=5,
)
