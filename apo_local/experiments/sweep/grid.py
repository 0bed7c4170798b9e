"""The grid: every cell of a sweep (method x grid point), its resolved run config, id and labels."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from apo_local.experiments.sweep.spec import SweepConfig
from apo_local.run.config import RunConfig, build_config, dump_config, flatten_keys
from apo_local.support.errors import ApoError

# Labels every cell has (the results tables' identity columns); other varied keys are added after them.
FIXED_LABEL_KEYS = ("task", "seed", "target.model", "optimizer.model", "search.proposer", "selection.selector")


@dataclass
class Cell:
    id: str  # directory name under the sweep dir: readable slug + short hash of the resolved config
    method: str | None
    overrides: dict[str, Any]  # dotted key -> value (method first, then the grid's)
    labels: dict[str, Any]  # axis -> value, for the results table
    config: RunConfig = field(repr=False)

    @property
    def config_text(self) -> str:
        return dump_config(self.config)


def expand(spec: SweepConfig, base: dict, origin: str = "sweep") -> list[Cell]:
    """Every cell of the grid, validated, in grid order (see ``order_for_engines``)."""
    methods = spec.methods or {None: {}}
    keys = list(spec.grid)
    varying = [k for k in keys if len(spec.grid[k]) > 1]
    cells: list[Cell] = []
    seen: set[str] = set()
    for method, mo in methods.items():
        m_over = flatten_keys(mo or {})
        clash = sorted(set(m_over) & set(keys))
        if clash:
            raise ApoError(f"{origin}: methods.{method} and grid both set {', '.join(clash)}; set it in one place")
        for combo in itertools.product(*(spec.grid[k] for k in keys)):
            cell = _cell(base, method, m_over, dict(zip(keys, combo)), varying, len(methods), origin)
            if cell.id not in seen:  # two grid points with the same resolved config: one run
                seen.add(cell.id)
                cells.append(cell)
    _disambiguate_model_labels(cells)
    return cells


def _cell(
    base: dict, method: str | None, m_over: dict, g_over: dict, varying: list[str], n_methods: int, origin: str
) -> Cell:
    overrides = {**m_over, **g_over}
    point = ", ".join(f"{k}={v}" for k, v in g_over.items()) + (f", method={method}" if method else "")
    cfg = build_config(json.loads(json.dumps(base)), overrides, origin=f"{origin} (cell {point})")
    digest = hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:8]
    parts = ([_slug(method)] if method and n_methods > 1 else []) + [_axis_slug(k, g_over[k]) for k in varying]
    slug = "__".join(parts) or (_slug(method) if method else "cell")
    return Cell(f"{slug}-{digest}", method, overrides, _labels(cfg, method, g_over), cfg)


def _disambiguate_model_labels(cells: list[Cell]) -> None:
    """Two different model names with the same short label: show them as given."""
    for axis, key in (("target", "target.model"), ("optimizer", "optimizer.model")):
        raw: dict[str, set] = {}
        for c in cells:
            raw.setdefault(c.labels[axis], set()).add(str(config_value(c.config, key)))
        for c in cells:
            if len(raw[c.labels[axis]]) > 1:
                c.labels[axis] = str(config_value(c.config, key))


def config_value(cfg: RunConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def model_label(name: str | None) -> str:
    if name is None:
        return "default"
    return str(name).rstrip("/").split("/")[-1] if "/" in str(name) else str(name)


def _slug(value: Any) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", "null" if value is None else str(value)).strip("-.")
    return s[-32:].strip("-.") or "x"


def _axis_slug(key: str, value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        short = {"seed": "s"}.get(key, key.split(".")[-1].replace("_", "")[:8])
        return _slug(f"{short}{value}")
    return _slug(value)


def _labels(cfg: RunConfig, method: str | None, g_over: dict) -> dict[str, Any]:
    labels = {
        "task": cfg.task,
        "method": method or cfg.search.proposer,
        "proposer": cfg.search.proposer,
        "selector": cfg.selection.selector,
        "target": model_label(cfg.target.model),
        "optimizer": model_label(cfg.optimizer.model) if cfg.optimizer.model is not None else "= target",
        "seed": cfg.seed,
    }
    for k, v in g_over.items():
        if k not in FIXED_LABEL_KEYS:
            labels[k] = v
    return labels
