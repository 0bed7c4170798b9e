"""The rows a run works on: the training rows (seeded ``train_limit`` subset), the demonstration pool of
the few-shot proposers (training rows set aside) and the test rows, with the checks that refuse a split
too small (or single-class) for what the config asks of it."""

from __future__ import annotations

from apo_local.config import DEMO_PROPOSERS, RunConfig
from apo_local.errors import ApoError
from apo_local.search.streams import seeded_order_key
from apo_local.tasks import Example, Task


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


def train_rows(task: Task, cfg: RunConfig) -> list[Example]:
    train = task.check_split("train")
    if cfg.search.proposer in DEMO_PROPOSERS:  # the demonstration pool is never scored by the search
        pool = {ex.id for ex in demo_pool(task, cfg.seed, cfg.fewshot.pool_size)}
        train = [ex for ex in train if ex.id not in pool]
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
    if len(train) < minibatch:
        raise ApoError(f"split 'train' of task {task.name} has {len(train)} examples outside the demonstration "
                       f"pool, fewer than search.minibatch_size of {minibatch}")
    return subset if cfg.train_limit else train


def eval_rows(task: Task, cfg: RunConfig) -> list[Example]:
    split, limit = cfg.evaluation.test_split, cfg.evaluation.test_limit
    rows = task.check_split(split, min_size=limit or 1, size_name="evaluation.test_limit" if limit else "the minimum")
    return rows[:limit]
