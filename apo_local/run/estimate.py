"""The pre-run size of a search, from the config and the task data alone (no engine): engine calls,
prompts and tokens per role, as upper bounds (every round assumed to run with a full beam, every
proposal admitted, every reply at ``max_tokens``). Tokens are counted at about 4 characters per token.

Printed before a search starts and written to the run directory as ``estimate.json``. The time figure
comes from this machine's own record (``throughput.json`` beside the result cache): each finished run
stores its seconds per target prompt and per optimizer output token, by model; until a run of the same
models has finished here, the time is given as unknown rather than guessed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from apo_local.config.schema import RunConfig
from apo_local.search.acceptance import RULES, SelectionCost
from apo_local.search.proposers import Expansion, method_of
from apo_local.support.errors import ApoError
from apo_local.support.files import atomic_write
from apo_local.tasks import Example, Task

CHARS_PER_TOKEN = 4
META_OVERHEAD = 150  # tokens of a meta-prompt's fixed text (measured on the built-ins: 90-220)


@dataclass
class RoleSize:
    calls: int = 0  # batched engine calls
    prompts: int = 0  # requests (a request with n samples is one prompt)
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, prompts: int, in_tokens: int, out_tokens: int = 0) -> None:
        if prompts:
            self.calls += 1
            self.prompts += prompts
            self.input_tokens += prompts * in_tokens
            self.output_tokens += out_tokens


@dataclass
class Estimate:
    target: RoleSize = field(default_factory=RoleSize)
    optimizer: RoleSize = field(default_factory=RoleSize)
    rounds: int = 0
    note: str = (
        "upper bounds from the config: a full beam every round, every proposal admitted, every reply at "
        "max_tokens; tokens at about 4 characters per token"
    )
    seconds: float | None = None  # at most this long on this machine (from its recorded throughput), or unknown

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"pre-run estimate ({self.rounds} rounds; {self.note}):"]
        for role in ("target", "optimizer"):
            r = getattr(self, role)
            out.append(
                f"  {role:9} calls<={r.calls:<5} prompts<={r.prompts:<7,} in_tokens~{r.input_tokens:<11,} "
                f"out_tokens<={r.output_tokens:,}"
            )
        out.append(
            f"  time<={self.seconds / 60:.1f} min on this machine (engine start not included; from its last "
            "finished run of these models)"
            if self.seconds is not None
            else "  time: unknown until a run of these models has finished on this machine"
        )
        return out


# -- this machine's throughput, recorded by finished runs -------------------------------------------


def throughput_path() -> Path:
    root = os.environ.get("APO_LOCAL_CACHE_DIR") or Path.home() / ".cache" / "apo-local"
    return Path(root) / "throughput.json"


def throughput_key(cfg: RunConfig) -> str:
    """The record's key: each role's resolved model (its weights fingerprint; a server's model name and URL), backend
    and dtype, so an alias, its folder and ``model: null`` for the default share one record."""
    from apo_local.engine import model_of

    t, o = cfg.target, cfg.optimizer_engine_config()

    def model(e) -> str | None:
        try:
            m = model_of(e.settings(cfg.seed))
        except ApoError:  # a model that cannot be resolved here: keyed by its name
            return e.model
        return m.get("fingerprint") or f"{m['name']}@{m.get('base_url')}"

    return json.dumps([[model(t), t.backend, t.dtype], [model(o), o.backend, o.dtype]])


def record_throughput(cfg: RunConfig, totals: dict) -> None:
    """Store a finished run's seconds per computed target prompt and per computed optimizer output token."""
    rates = {}
    for role, unit in (("target", "prompts"), ("optimizer", "output_tokens")):
        t = totals.get(role) or {}
        computed = t.get(unit, 0) * (1 - t.get("cache_hits", 0) / max(1, t.get("prompts", 0)))
        if computed >= 1 and t.get("seconds", 0) > 0:
            rates[role] = t["seconds"] / computed
    if not rates:
        return  # all answered from the cache: nothing measured
    path = throughput_path()
    try:
        known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        known[throughput_key(cfg)] = rates
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(path, json.dumps(known, indent=1))  # readable by the user only, like the cache
    except (OSError, ValueError):
        pass  # a record that can't be written only leaves the next estimate without a time


def _seconds(cfg: RunConfig, est: Estimate) -> float | None:
    try:
        rates = json.loads(throughput_path().read_text(encoding="utf-8")).get(throughput_key(cfg))
    except (OSError, ValueError):
        return None
    if not rates or set(rates) != {"target", "optimizer"}:
        return None
    return round(est.target.prompts * rates["target"] + est.optimizer.output_tokens * rates["optimizer"], 1)


def _tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def estimate(
    cfg: RunConfig,
    task: Task,
    train: list[Example],
    test: list[Example],
    validation: list[Example] = (),
    *,
    proposer_cost: Callable[[Expansion], int] | None = None,
    selection_cost: Callable[[SelectionCost], None] | None = None,
) -> Estimate:
    """The size of the search ``cfg`` describes on ``task`` (``train`` / ``test`` / ``validation``: the rows it
    uses; the final beam is scored on the validation rows): the sum of what the method's expansions (its
    ``Method.cost``) and the acceptance rule's selections (its ``Rule.cost``) declare they cost each round, and
    the final evaluation. ``proposer_cost`` / ``selection_cost``: those of strategy objects passed to
    ``optimize`` instead of the configured names' (``cost`` attributes)."""
    instruction = cfg.search.initial_prompt or task.initial_instruction
    sample = train[:50]
    row = sum(_tokens(ex.input) for ex in sample) // max(1, len(sample)) + 8  # one example shown to the optimizer
    prompt = _tokens(instruction)
    target_in = sum(_tokens(task.render(instruction, ex)) for ex in sample) // max(1, len(sample))
    method = method_of(cfg.search.proposer)
    target_in += method.demonstrations(cfg) * row  # the demonstrations a prompt may carry
    mode, answer_tokens, _ = method.target_answer(cfg)
    judge = _JudgeSize.of(task, answer_tokens, sample, cfg.feedback.show_evaluation)
    est = Estimate(rounds=cfg.search.rounds)
    expand = proposer_cost or method.cost
    select = selection_cost or RULES[cfg.selection.acceptance].cost
    for rnd in range(1, cfg.search.rounds + 1):
        parents = 1 if rnd == 1 else cfg.search.beam_size
        new = expand(
            Expansion(cfg, est.target, est.optimizer, parents, rnd, target_in, META_OVERHEAD + prompt, row, judge)
        )  # adds the round's expansion; the most proposals it makes
        select(SelectionCost(cfg, est.target, parents, min(new, parents * cfg.search.max_expansion), target_in))
        if cfg.evaluation.per_round_test:
            est.target.add(cfg.search.beam_size * len(test), target_in)
    # the final pick, on the validation rows: the final beam, and the initial prompt (guarded; method: beside it)
    est.target.add((cfg.search.beam_size + (cfg.selection.final_pick != "reference")) * len(validation), target_in)
    est.target.add((cfg.search.beam_size + 1) * len(test), target_in)  # the final test
    if cfg.evaluation.attribution:  # the selected prompt's lineage (rounds + 1) and its ablated prompts, one batch
        from apo_local.run.attribution import MAX_UNITS

        est.target.add((cfg.search.rounds + 1 + MAX_UNITS) * (len(validation) + len(test)), target_in)
    if mode == "generate":
        est.target.output_tokens += est.target.prompts * answer_tokens
    if judge:
        judge.grading(est)
    est.seconds = _seconds(cfg, est)
    return est


@dataclass
class _JudgeSize:
    """A judged task (metric judge). The judge runs on the optimizer's engine or judge.model, and the trace counts
    it under the optimizer: so does the estimate. ``reason_in`` is 0 when the optimizer is shown no evaluation."""

    grade_in: int  # tokens of one grading prompt
    reason_in: int  # tokens of one reason prompt

    @classmethod
    def of(cls, task: Task, answer_tokens: int, sample: list[Example], show_evaluation: bool) -> _JudgeSize | None:
        from apo_local.tasks.judge import judge_of

        judge = judge_of(task)
        if judge is None:
            return None
        pair = answer_tokens + sum(_tokens(ex.label) for ex in sample) // max(1, len(sample))  # output + reference
        return cls(
            _tokens(judge.prompt("", "")) + pair, _tokens(judge.reason_prompt("", "")) + pair if show_evaluation else 0
        )

    def grading(self, est: Estimate) -> None:
        """Every target scoring call is followed by one grading batch of its outputs (at most one prompt per
        output), plus the content-free prior once."""
        calls, prompts = est.target.calls, est.target.prompts
        est.optimizer.add(1, self.grade_in)  # the prior
        est.optimizer.calls += calls
        est.optimizer.prompts += prompts
        est.optimizer.input_tokens += prompts * self.grade_in

    def reasons(self, optimizer: RoleSize, groups: int, per_group: int) -> None:
        """Every error group shown to the optimizer is preceded by one batch of the judge's reasons."""
        from apo_local.tasks.judge import REASON_TOKENS

        for _ in range(groups if self.reason_in else 0):
            optimizer.add(per_group, self.reason_in, per_group * REASON_TOKENS)
