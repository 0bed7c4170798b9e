"""A proposal method in one place.

``Method`` declares everything the rest of apo-local asks of a proposer: its name, the class that makes the
candidates and the options it is built with, the config sections and knobs it reads (the config refuses the
others), its size presets, its pre-run cost, and the few facts the config checks and the run's splits need.
Each module of this package that defines ``METHOD`` (or ``METHODS``, a tuple) adds that method:
``proposers/__init__.py`` finds it, and the config, ``--preset``, the estimate and the splits read it from
there. A library user registers a method of their own with ``register_method``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from apo_local.config.schema import RunConfig

if TYPE_CHECKING:
    from apo_local.run.estimate import RoleSize
    from apo_local.tasks import Task


class TargetAnswer(NamedTuple):
    """How the target answers while a method runs: scoring mode, most answer tokens, how a reply is read."""

    mode: str
    max_tokens: int
    reading: str


@dataclass
class Expansion:
    """One round's expansion as the pre-run estimate sizes it (upper bounds): what a method's ``cost`` adds its
    engine calls to, with the sizes it needs. Tokens are the estimate's (about 4 characters each)."""

    cfg: RunConfig
    target: RoleSize
    optimizer: RoleSize
    parents: int  # beam prompts expanded this round
    round: int
    target_in: int  # tokens of one target prompt
    meta: int  # tokens of a meta-prompt with the parent prompt in it
    row: int  # tokens of one example shown to the optimizer
    judge: Any = None  # the judge's sizes on a judged task (``estimate._JudgeSize``), else None

    @property
    def out_max(self) -> int:
        return self.cfg.optimizer.max_tokens

    def paraphrases(self, updates: int, mc_samples: int) -> int:
        """One call of ``mc_samples`` Monte-Carlo paraphrases of each update and each parent; their number."""
        sources = updates + self.parents if mc_samples else 0
        self.optimizer.add(sources, self.meta, sources * mc_samples * self.out_max)
        return sources * mc_samples

    def error_groups(self) -> tuple[int, int]:
        """The minibatch scoring (and, on a judged task, the judge's reasons) before a data-driven update, sized by
        the ``protegi`` section; (error groups, tokens of a meta-prompt showing one group)."""
        p = self.cfg.protegi
        self.target.add(self.parents * self.cfg.search.minibatch_size, self.target_in)
        groups = self.parents * p.n_gradients
        if self.judge:
            self.judge.reasons(self.optimizer, groups, p.errors_per_gradient)
        return groups, self.meta + p.errors_per_gradient * self.row

    def edits(self, groups: int, shown: int) -> int:
        """The edit call of ``reasons_per_gradient`` reasons per group; the edits it can make."""
        p = self.cfg.protegi
        reasons = groups * p.reasons_per_gradient
        self.optimizer.add(reasons, shown + self.out_max // 4, reasons * self.out_max)
        return reasons * p.edits_per_gradient


def _none(cfg: RunConfig) -> None:
    return None


def _yes(cfg: RunConfig) -> bool:
    return True


def _zero(cfg: RunConfig) -> int:
    return 0


def _nothing_held_out(task: Task, cfg: RunConfig) -> set[str]:
    return set()


@dataclass(frozen=True)
class Method:
    """A proposer and what apo-local needs to know of it.

    ``knobs``: per config section it reads, the keys it uses (a key it ignores is refused when set).
    ``options``: its constructor's keyword arguments from a config (default: the used keys of its one section).
    ``cost``: adds one round's expansion to the estimate (``Expansion``) and returns the most proposals it makes.
    ``presets``: per size preset (``smoke``, ``demo``), the values of its sections.
    ``data_free``: what shows the optimizer no data under this config (for the error that says so), else None.
    ``makes_updates``: whether it makes updates, what naive and validated acceptance choose among.
    ``paraphrase_knob``: the knob that asks for Monte-Carlo paraphrases when it is set (those two rules refuse
    it), else None.
    ``answer``: how the target answers when the method decides it (then ``scoring.mode`` and ``scoring.parse``
    are not read), else None.
    ``refuse``: a setting that contradicts the method (one line), else None.
    ``demonstrations``: most demonstrations a prompt carries (the estimate counts their tokens).
    ``held_out``: ids of training rows it sets aside (never in minibatches, selection or validation).
    ``rank``: its place in listings (built-ins first, in the order of the docs)."""

    name: str
    proposer: Callable[..., Any]
    knobs: Mapping[str, frozenset[str]]
    cost: Callable[[Expansion], int]
    presets: Mapping[str, Mapping[str, dict]] = field(default_factory=dict)
    options: Callable[[RunConfig], dict] | None = None
    data_free: Callable[[RunConfig], str | None] = _none
    makes_updates: Callable[[RunConfig], bool] = _yes
    paraphrase_knob: Callable[[RunConfig], str | None] = _none
    answer: Callable[[RunConfig], TargetAnswer] | None = None
    refuse: Callable[[RunConfig], str | None] = _none
    demonstrations: Callable[[RunConfig], int] = _zero
    held_out: Callable[[Task, RunConfig], set[str]] = _nothing_held_out
    rank: int = 100

    def options_of(self, cfg: RunConfig) -> dict:
        if self.options is not None:
            return self.options(cfg)
        ((section, keys),) = self.knobs.items()
        return {k: v for k, v in getattr(cfg, section).model_dump().items() if k in keys}

    def make(self, cfg: RunConfig | None = None):
        """The proposer, with its options from ``cfg`` (None: its defaults)."""
        return self.proposer(**(self.options_of(cfg) if cfg is not None else {}))

    def target_answer(self, cfg: RunConfig) -> TargetAnswer:
        if self.answer is not None:
            return self.answer(cfg)
        return TargetAnswer(cfg.scoring.mode, cfg.scoring.max_tokens, cfg.scoring.parse)


def section_keys(section_type) -> frozenset[str]:
    """Every key of a config section (``ProTeGiConfig`` ...)."""
    return frozenset(section_type.model_fields)
