"""The rows a run works on: the training rows (seeded ``train_limit`` subset), the held-out validation rows
of validated acceptance, and the test rows, with the checks that refuse a split too small (or single-class)
for what the config asks of it.

Validated acceptance (Melcer et al., 2025) validates on rows the errors were not drawn from: the task's
``validation`` split when it has one, otherwise ``selection.validation_size`` training rows held out by a
seeded pick (the same in every round and on resume) and removed from the rows the search works on."""

from __future__ import annotations

from apo_local.config import RunConfig
from apo_local.errors import ApoError
from apo_local.search.streams import seeded_order_key
from apo_local.tasks import Example, Task


def train_rows(task: Task, cfg: RunConfig) -> list[Example]:
    """The rows proposers, feedback and bandit selection draw from (held-out validation rows excluded)."""
    rows = _train_subset(task, cfg)
    if cfg.selection.acceptance == "validated" and "validation" not in task.split_names:
        held = {ex.id for ex in _held_out(rows, cfg)}
        rows = [ex for ex in rows if ex.id not in held]
        if len(rows) < cfg.search.minibatch_size:
            raise ApoError(f"{len(rows)} training rows are left after holding out selection.validation_size="
                           f"{cfg.selection.validation_size} for validation, fewer than search.minibatch_size "
                           f"({cfg.search.minibatch_size}); raise train_limit or lower one of them")
    return rows


def validation_rows(task: Task, cfg: RunConfig) -> list[Example]:
    """Validated acceptance's fixed validation rows (empty for the other acceptance rules)."""
    if cfg.selection.acceptance != "validated":
        return []
    if "validation" in task.split_names:
        return _held_out(task.check_split("validation"), cfg)
    return _held_out(_train_subset(task, cfg), cfg)


def _held_out(rows: list[Example], cfg: RunConfig) -> list[Example]:
    order = sorted(rows, key=lambda ex: seeded_order_key(cfg.seed + 104729, ex.id))
    return order[: cfg.selection.validation_size]


def _train_subset(task: Task, cfg: RunConfig) -> list[Example]:
    train = task.check_split("train")
    minibatch = cfg.search.minibatch_size
    if cfg.train_limit:
        if cfg.train_limit < minibatch:
            raise ApoError(f"train_limit ({cfg.train_limit}) is smaller than search.minibatch_size "
                           f"({minibatch}); raise train_limit or lower minibatch_size")
        subset = sorted(train, key=lambda ex: seeded_order_key(cfg.seed, ex.id))[: cfg.train_limit]
        if task.kind == "classification" and len({ex.label for ex in subset}) < 2:
            raise ApoError(f"the first train_limit={cfg.train_limit} training examples hold only one class; "
                           f"raise train_limit")
    task.check_split("train", min_size=minibatch, size_name="search.minibatch_size")
    return subset if cfg.train_limit else train


def eval_rows(task: Task, cfg: RunConfig) -> list[Example]:
    split, limit = cfg.evaluation.test_split, cfg.evaluation.test_limit
    rows = task.check_split(split, min_size=limit or 1, size_name="evaluation.test_limit" if limit else "the minimum")
    return rows[:limit]
