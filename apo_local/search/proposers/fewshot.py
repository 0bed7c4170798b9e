"""Few-shot demonstrations as an optimized section of the prompt (DSPy MIPROv2 and CAPO select them with
the instruction).

* ``fewshot``: each beam prompt gets ``fewshot.samples_per_parent`` children, each one demonstration move
  away: **add** a pool row, **remove** one demonstration, or **swap** one for a pool row (a seeded,
  uniform choice among the moves possible: no add at ``max_demos``, no remove or swap without
  demonstrations). The instruction is kept. No engine call: the moves cost nothing until selection
  scores them (label log-probs; the instruction and demonstrations are the shared prefix of every
  example's prompt, so vLLM's prefix cache prefills them once per candidate).
* ``instruction+fewshot``: the same moves, interleaved in every round with ProTeGi instruction edits
  (``protegi`` section): the optimizer sees and edits the instruction only, its errors come from the
  whole prompt (demonstrations included), and each edit keeps its parent's demonstrations. Every
  child differs from its parent in one section; the acceptance rule picks among both kinds, and
  ``max_expansion`` caps them together.

Demonstrations come from ``demo_pool``: training rows set aside (never test rows, never scored
by the search, so a prompt is never evaluated on its own demonstrations).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from apo_local.config.schema import FewShotConfig, RunConfig
from apo_local.search.context import RoundContext
from apo_local.search.proposers.method import Expansion, Method, section_keys
from apo_local.search.proposers.protegi import METHOD as PROTEGI
from apo_local.search.proposers.protegi import ProTeGiProposer
from apo_local.search.state import Candidate, Status
from apo_local.search.streams import seeded_order_key
from apo_local.tasks import Example, Task
from apo_local.tasks.demos import demo, join_prompt, split_prompt

MOVES = ("add", "remove", "swap")


def demo_move(
    demos: Sequence[dict], pool: Sequence[dict], max_demos: int, rng: random.Random
) -> tuple[str, list[dict]] | None:
    """One seeded move on ``demos`` with rows of ``pool`` not in use: (move, new demonstrations), or None
    when no move is possible."""
    used = {d["id"] for d in demos}
    free = [p for p in pool if p["id"] not in used]
    possible = [
        m
        for m in MOVES
        if (m == "add" and free and len(demos) < max_demos)
        or (m == "remove" and demos)
        or (m == "swap" and demos and free)
    ]
    if not possible:
        return None
    move, out = rng.choice(possible), list(demos)
    if move == "add":
        out.insert(rng.randint(0, len(out)), rng.choice(free))
    elif move == "remove":
        out.pop(rng.randrange(len(out)))
    else:
        out[rng.randrange(len(out))] = rng.choice(free)
    return move, out


def demo_pool(task: Task, seed: int, size: int) -> list[Example]:
    """``size`` training rows in a seeded order, label-balanced (round robin over the labels): the rows the
    few-shot proposers draw demonstrations from. Never test rows."""
    train = sorted(task.check_split("train"), key=lambda ex: seeded_order_key(seed, "demo|" + ex.id))
    by_label: dict[str, list[Example]] = {}
    for ex in train:
        by_label.setdefault(ex.label if task.kind == "classification" else "", []).append(ex)
    queues, pool = list(by_label.values()), []
    while len(pool) < size and any(queues):
        for q in queues:
            if q and len(pool) < size:
                pool.append(q.pop(0))
    return pool


class FewShotProposer:
    name = "fewshot"

    def __init__(self, samples_per_parent=4, max_demos=4, pool_size=64):
        self.samples_per_parent, self.max_demos, self.pool_size = samples_per_parent, max_demos, pool_size

    def propose(self, parents: list[Candidate], ctx: RoundContext) -> list[Candidate]:
        return ctx.admit(self.moves(parents, ctx), parents)

    def moves(self, parents: list[Candidate], ctx: RoundContext) -> list[Candidate]:
        pool = [demo(ex) for ex in demo_pool(ctx.task, ctx.seed, self.pool_size)]
        out = []
        for parent in parents:
            instruction, demos = split_prompt(parent.text)
            rng = ctx.streams.rng("demos", parent.id)
            for _ in range(self.samples_per_parent):
                moved = demo_move(demos, pool, self.max_demos, rng)
                if moved:
                    out.append(
                        Candidate(join_prompt(instruction, moved[1]), ctx.round, f"demo-{moved[0]}", parent=parent.id)
                    )
        return out


class _WholePromptFeedback:
    """The round's feedback for instruction-only parents, scored as their whole prompts (with demonstrations)."""

    def __init__(self, inner, whole: dict[str, Candidate]):
        self.inner, self.whole = inner, whole  # instruction-only parent id -> the whole parent

    @property
    def evaluated(self) -> bool:
        return self.inner.evaluated

    def shown(self, ex):
        return self.inner.shown(ex)

    def block(self, rows):
        return self.inner.block(rows)

    def pools(self, parents, streams):
        pools = self.inner.pools([self.whole[p.id] for p in parents], streams)
        return {p.id: pools[self.whole[p.id].id] for p in parents}

    def groups(self, parents, streams, n_groups, rows_per_group):
        bare = {self.whole[p.id].id: p for p in parents}
        return [
            (bare[w.id], block)
            for w, block in self.inner.groups([self.whole[p.id] for p in parents], streams, n_groups, rows_per_group)
        ]


class InstructionFewShotProposer:
    name = "instruction+fewshot"

    def __init__(self, protegi: dict | None = None, **fewshot):
        self.demos, self.edits = FewShotProposer(**fewshot), ProTeGiProposer(**(protegi or {}))

    def propose(self, parents: list[Candidate], ctx: RoundContext) -> list[Candidate]:
        split = {p.id: split_prompt(p.text) for p in parents}
        bare = {p.id: replace(p, text=split[p.id][0], id="") for p in parents}
        whole = {bare[p.id].id: p for p in parents}
        edits = self.edits.propose(
            list(bare.values()), replace(ctx, feedback=_WholePromptFeedback(ctx.feedback, whole))
        )
        return ctx.admit(self._with_demos(edits, whole, split, ctx) + self.demos.moves(parents, ctx), parents)

    @staticmethod
    def _with_demos(edits: list[Candidate], whole: dict[str, Candidate], split: dict, ctx) -> list[Candidate]:
        """Instruction edits (and their paraphrases) carrying their root parent's demonstrations."""
        new_id, root, out = {b: w.id for b, w in whole.items()}, {b: w.id for b, w in whole.items()}, []
        for c in edits:
            root[c.id] = root.get(c.parent, c.parent)
            text = join_prompt(c.text, split[root[c.id]][1])
            d = Candidate(
                text,
                c.round,
                c.operator,
                parent=new_id.get(c.parent, c.parent),
                gradient=c.gradient,
                critique=c.critique,
            )
            new_id[c.id] = d.id
            if c.status in (Status.REJECTED, Status.DROPPED):
                d.mark(c.status, c.reason)
            out.append(d)
        return out


# -- the methods: demonstration moves alone, and with ProTeGi's instruction edits ---------------------------------

FEWSHOT_KNOBS = section_keys(FewShotConfig)


def _moves(x: Expansion) -> int:
    return x.parents * x.cfg.fewshot.samples_per_parent  # no engine call


def _pool_ids(task: Task, cfg: RunConfig) -> set[str]:
    return {ex.id for ex in demo_pool(task, cfg.seed, cfg.fewshot.pool_size)}


def _max_demos(cfg: RunConfig) -> int:
    return cfg.fewshot.max_demos


def _instruction_options(cfg: RunConfig) -> dict:
    return {**cfg.fewshot.model_dump(), "protegi": cfg.protegi.model_dump()}


METHODS = (
    Method(
        name="fewshot",
        proposer=FewShotProposer,
        knobs={"fewshot": FEWSHOT_KNOBS},
        cost=_moves,
        demonstrations=_max_demos,
        held_out=_pool_ids,
        rank=6,
    ),
    Method(
        name="instruction+fewshot",
        proposer=InstructionFewShotProposer,
        knobs={"fewshot": FEWSHOT_KNOBS, "protegi": PROTEGI.knobs["protegi"]},
        cost=lambda x: _moves(x) + PROTEGI.cost(x),
        presets=PROTEGI.presets,
        options=_instruction_options,
        data_free=PROTEGI.data_free,
        makes_updates=PROTEGI.makes_updates,
        paraphrase_knob=PROTEGI.paraphrase_knob,
        demonstrations=_max_demos,
        held_out=_pool_ids,
        rank=7,
    ),
)
