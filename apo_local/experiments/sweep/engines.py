"""Which engines a cell needs: cells sharing them run next to each other; GPUs a cell asks Ray for."""

from __future__ import annotations

import json

from apo_local.experiments.sweep.grid import Cell
from apo_local.run.config import RunConfig
from apo_local.support.errors import ApoError


def engine_keys(cfg: RunConfig) -> frozenset:
    """What ``load_engine`` keys its backends on, for the target and optimizer of ``cfg``."""
    from apo_local import engine as eng

    settings = [cfg.target.settings(cfg.seed), cfg.optimizer_engine_config().settings(cfg.seed)]
    public = getattr(eng, "engine_key", None)
    if public is not None:
        return frozenset(public(s) for s in settings)
    from apo_local.models.registry import resolve_model

    def folder(name):
        try:
            return str(resolve_model(name, prepare_if_missing=False))
        except ApoError:
            return str(name)

    return frozenset((folder(s.model), s.backend, s.resolved()) for s in settings)


def _pair(cfg: RunConfig) -> str:
    return json.dumps(
        [cfg.target.model_dump(mode="json"), cfg.optimizer_engine_config().model_dump(mode="json")], sort_keys=True
    )


def order_for_engines(cells: list[Cell]) -> list[Cell]:
    """Cells needing the same (target, optimizer) engines next to each other (then by seed); stable."""
    first: dict[str, int] = {}
    for i, c in enumerate(cells):
        first.setdefault(_pair(c.config), i)
    return sorted(cells, key=lambda c: (first[_pair(c.config)], c.config.seed))


def gpus_for(cfg: RunConfig) -> int:
    from apo_local.engine.placement import ray_gpus  # both engines' GPUs when the roles load different models

    return ray_gpus(
        cfg.target.tensor_parallel_size, cfg.optimizer_engine_config().tensor_parallel_size, len(engine_keys(cfg)) == 1
    )
