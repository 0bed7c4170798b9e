"""The rows a run works on: the training rows (seeded ``train_limit`` subset), the demonstration pool of
the few-shot proposers (training rows set aside), the validation rows (kept apart from training, the
demonstration pool and test) and the test rows, with the checks that refuse a split too small (or
single-class) for what the config asks of it.

Validation (``evaluation.validation_split``): ``auto`` takes the task's ``validation`` split when it has one,
else holds ``validation_rows`` training rows out (a seeded pick, at most a fifth of train; with
``train_limit``, at most a quarter of the limit), so the prompt the search selects is chosen without the
test split and the training rows the errors come from; ``none`` keeps the earlier layout (no validation).

Validated acceptance (Melcer et al., 2025) validates on these rows too (the first ``selection.validation_size``
of them): rows the errors were never drawn from. It needs them: with ``validation_split: none`` it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from apo_local.config.schema import RunConfig
from apo_local.search.feedback import corrupt_examples
from apo_local.search.proposers import method_of
from apo_local.search.streams import seeded_order_key
from apo_local.stats import examples_needed
from apo_local.support.errors import ApoError
from apo_local.tasks import Example, Task


def _pool_ids(task: Task, cfg: RunConfig) -> set[str]:
    return method_of(cfg.search.proposer).held_out(task, cfg)


def _holdout_size(cfg: RunConfig, n_train: int) -> int:
    cap = n_train // 5 if not cfg.train_limit else min(n_train // 5, cfg.train_limit // 4)
    size = min(cfg.evaluation.validation_rows, cap)
    if cfg.selection.acceptance == "validated":  # validated acceptance's fixed sample is held out whole
        size = max(size, min(cfg.selection.validation_size, n_train // 2))
    return size


@dataclass(frozen=True)
class Splits:
    """The rows of one run, computed once before any engine starts (``split_rows``)."""

    train: list[Example]  # the training rows proposers draw errors from
    validation: list[Example]  # the validation rows, true labels ([] with validation_split: none)
    test: list[Example]
    selection_train: list[Example]  # ``train`` with the labels the selection rewards use (wrong labels: corrupted)
    selection_validation: list[Example]  # ``validation`` likewise (validated acceptance, the final pick)


def split_rows(task: Task, cfg: RunConfig) -> Splits:
    """Every split of a run, with the checks that refuse one too small; the held-out pool drawn once."""
    pool = _pool_ids(task, cfg)
    validation = validation_rows(task, cfg, pool)
    train = train_rows(task, cfg, pool, validation)
    test = eval_rows(task, cfg)
    f = cfg.feedback
    if "wrong" in (f.labels, f.selection_labels) or f.errors == "pseudo":
        corrupt_examples(train[:1], task, cfg.seed, f.numeric_offset)  # refuse a task that can't be corrupted, now
    selection_train, selection_validation = train, validation
    if f.selection_labels == "wrong":  # the selection (bandit, validation, final pick) sees the wrong labels
        selection_train, selection_validation = (
            corrupt_examples(rows, task, cfg.seed, f.numeric_offset) for rows in (train, validation)
        )
    return Splits(train, validation, test, selection_train, selection_validation)


def validation_rows(task: Task, cfg: RunConfig, pool: set[str] | None = None) -> list[Example]:
    """The validation rows ([] when there are none); ``pool``: the method's held-out rows, when known."""
    split = cfg.evaluation.validation_split
    if split == "none":
        if cfg.selection.acceptance == "validated":
            raise ApoError(
                "selection.acceptance: validated needs validation rows; set evaluation.validation_split "
                "to auto or a split name (not none)"
            )
        return []
    if split == "auto" and "validation" not in task.split_names:
        pool = _pool_ids(task, cfg) if pool is None else pool
        train = [ex for ex in task.check_split("train") if ex.id not in pool]
        order = sorted(train, key=lambda ex: seeded_order_key(cfg.seed, "validation:" + ex.id))
        return order[: _holdout_size(cfg, len(train))]
    name = "validation" if split == "auto" else split
    if name in (cfg.evaluation.test_split, "train"):
        raise ApoError(
            f"evaluation.validation_split {name!r} is the {'test' if name != 'train' else 'training'} "
            f"split; name another split, auto or none"
        )
    return task.check_split(name)


def train_rows(
    task: Task, cfg: RunConfig, pool: set[str] | None = None, validation: list[Example] | None = None
) -> list[Example]:
    """The training rows: less the validation rows held out of train and the method's held-out pool."""
    pool = _pool_ids(task, cfg) if pool is None else pool
    if cfg.evaluation.validation_split != "auto":
        held_out: set[str] = set()
    else:
        held_out = {ex.id for ex in (validation_rows(task, cfg, pool) if validation is None else validation)}
    held_out |= pool  # the demonstration pool is never scored by the search
    train = [ex for ex in task.check_split("train") if ex.id not in held_out]
    minibatch = cfg.search.minibatch_size
    if cfg.train_limit:
        if cfg.train_limit < minibatch:
            raise ApoError(
                f"train_limit ({cfg.train_limit}) is smaller than search.minibatch_size "
                f"({minibatch}); raise train_limit or lower minibatch_size"
            )
        subset = sorted(train, key=lambda ex: seeded_order_key(cfg.seed, ex.id))[: cfg.train_limit]
        if task.kind == "classification" and len({ex.label for ex in subset}) < 2:
            raise ApoError(
                f"the first train_limit={cfg.train_limit} training examples hold only one class; raise train_limit"
            )
        return subset
    if len(train) < minibatch:
        raise ApoError(
            f"split 'train' of task {task.name} has {len(train)} examples"
            f"{f' ({len(held_out)} held out as validation or demonstrations)' if held_out else ''}, "
            f"fewer than search.minibatch_size of {minibatch}"
        )
    return train


def eval_rows(task: Task, cfg: RunConfig) -> list[Example]:
    split, limit = cfg.evaluation.test_split, cfg.evaluation.test_limit
    rows = task.check_split(split, min_size=limit or 1, size_name="evaluation.test_limit" if limit else "the minimum")
    return rows[:limit]


# What a validation split must separate: prompts SEPARATE_DELTA apart in accuracy, when they disagree on
# ASSUMED_DISCORDANT of the rows (a beam's prompts are close relatives); a split too small for that is warned of.
SEPARATE_DELTA, ASSUMED_DISCORDANT, FINER_DELTA = 0.2, 0.2, 0.1


def validation_warning(n: int) -> str | None:
    """One line when ``n`` validation rows (n > 0) are too few to tell the final beam's prompts apart: fewer than
    a paired comparison needs to detect an accuracy difference of ``SEPARATE_DELTA`` (two-sided 5%, 80% power,
    prompts disagreeing on ``ASSUMED_DISCORDANT`` of the rows; ``stats.examples_needed``). None otherwise."""
    need = examples_needed(SEPARATE_DELTA, ASSUMED_DISCORDANT)
    if n <= 0 or n >= need:
        return None
    finer = examples_needed(FINER_DELTA, ASSUMED_DISCORDANT)
    return (
        f"warning: the final pick is made on {n} validation rows, too few to tell prompts apart: detecting an "
        f"accuracy difference of {SEPARATE_DELTA:.2f} needs about {need} rows, {FINER_DELTA:.2f} about {finer} "
        f"(80% power, 5% level, prompts disagreeing on {ASSUMED_DISCORDANT:.0%} of rows); give the task a "
        f"validation split or raise evaluation.validation_rows"
    )
