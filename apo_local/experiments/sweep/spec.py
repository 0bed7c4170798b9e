"""The sweep config file: ``base``, ``grid``, ``methods`` and ``ray``, validated to one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from apo_local.run.config import read_run_config, read_yaml_mapping
from apo_local.support.errors import ApoError


class RayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = None  # "auto", "ray://host:10001", ...; None: start a local instance
    num_gpus_per_cell: int | str = "auto"  # "auto": max tensor-parallel size of the cell's engines (0 without GPUs)
    num_cpus_per_cell: float = Field(1, gt=0)
    ship_back: bool = True  # return finished cells as archives when the driver can't see the worker's files


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    base: dict[str, Any] | str = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    methods: dict[str, dict[str, Any] | None] | None = None
    ray: RayOptions = RayOptions()


def load_sweep(path: str | Path) -> tuple[SweepConfig, dict]:
    """The validated sweep config and its base run config (a dict; a ``base:`` path is read)."""
    p = Path(path)
    data = read_yaml_mapping(p, "sweep config")
    return parse_sweep(data, origin=str(p), root=p.parent)


def parse_sweep(data: dict, origin: str = "sweep", root: Path | None = None) -> tuple[SweepConfig, dict]:
    if not isinstance(data, dict):
        raise ApoError(f"{origin}: expected a mapping (base, grid, methods, ray) at the top level")
    try:
        spec = SweepConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(x) for x in first["loc"]) or "(top level)"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ApoError(f"{origin}: {key}: {msg}") from None
    base = _read_base(spec.base, origin, root)
    for key, values in spec.grid.items():
        if not values:
            raise ApoError(f"{origin}: grid.{key}: empty list (give at least one value)")
    if spec.methods is not None and not spec.methods:
        raise ApoError(f"{origin}: methods: empty (leave it out, or name at least one method)")
    g = spec.ray.num_gpus_per_cell
    if isinstance(g, str) and g != "auto" or isinstance(g, int) and g < 0:
        raise ApoError(f"{origin}: ray.num_gpus_per_cell: 'auto' or a whole number >= 0")
    return spec, base


def _read_base(base: dict | str, origin: str, root: Path | None) -> dict:
    """``base`` as given, or the run config YAML it names (relative to the sweep config's folder)."""
    if not isinstance(base, str):
        return base
    bp = Path(base)
    if not bp.is_absolute() and root is not None and not bp.is_file():
        bp = root / bp
    if not bp.is_file():
        raise ApoError(f"{origin}: base: run config {base} does not exist")
    return read_run_config(bp, "run config")
