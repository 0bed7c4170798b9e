"""Sweeps: a grid of runs (tasks x methods x target models x optimizer models x seeds x any key).

    apo-local sweep --config configs/sweep-example.yaml --out runs/sweep [--ray]

A sweep config::

    name: liar-small                 # optional
    base: {...run config...}         # or a path to a run config YAML (relative to this file)
    grid:                            # cartesian product; every key is a dotted run-config key
      task: [liar]
      target.model: [smollm2-135m]
      optimizer.model: [null, /models/Qwen2.5-7B-Instruct]
      seed: [0, 1]
    methods:                         # optional: named override sets, one more grid axis ("method")
      protegi: {}
      protegi-sh: {selection.selector: successive-halving}
    ray: {address: null, num_gpus_per_cell: auto, num_cpus_per_cell: 1}

Each cell is an ordinary run directory ``DIR/<slug>-<hash>`` (the hash is of the cell's resolved
config, so editing ``base`` makes new cells instead of mixing runs). Re-running the same command
skips completed cells (``results.json``), resumes interrupted ones (``checkpoint.json``) and starts
the rest. ``DIR/results.csv`` and ``DIR/results.md`` hold one row per cell plus mean +- std per group
(every axis but the seed); when the grid varies ``optimizer.model`` they also get the optimizer-size
view (``optimizer-size.csv``, ``optimizer-size.png``).

In-process, cells run one after another, ordered so that cells that need the same engines are
adjacent: engines load once per (target, optimizer) pair, and are released when the next group
needs others. With ``--ray`` (or ``ray.address``) every cell is a Ray task asking for as many GPUs
as its tensor-parallel size (none on CPU): on one multi-GPU node this fills the GPUs, on a cluster
it spreads over the nodes. On CPU a worker keeps its engines for the next cell of the same pair; on
GPUs each cell gets a fresh worker (Ray's rule for GPU tasks) so GPU memory is always given back,
and loads its engines itself. Ray is optional (``pip install 'apo-local[ray]'``); it must not phone home, so usage stats are
switched off before it starts. On a multi-node cluster the workers need apo-local installed; if they
do not share DIR's filesystem, finished cells are shipped back to the driver as archives.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import statistics
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from apo_local.config import RunConfig, build_config, dump_config, read_yaml_mapping
from apo_local.errors import ApoError
from apo_local.run_dir import atomic_write, write_json

log = logging.getLogger("apo_local")

MANIFEST = "cells.json"
SWEEP_CONFIG = "sweep.yaml"


# -- the sweep config ---------------------------------------------------------------------------


class RayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: Optional[str] = None  # "auto", "ray://host:10001", ...; None: start a local instance
    num_gpus_per_cell: int | str = "auto"  # "auto": max tensor-parallel size of the cell's engines (0 without GPUs)
    num_cpus_per_cell: float = Field(1, gt=0)
    ship_back: bool = True  # return finished cells as archives when the driver can't see the worker's files


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Optional[str] = None
    base: dict[str, Any] | str = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    methods: Optional[dict[str, Optional[dict[str, Any]]]] = None
    ray: RayOptions = RayOptions()


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


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


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
    base = spec.base
    if isinstance(base, str):
        bp = Path(base)
        if not bp.is_absolute() and root is not None and not bp.is_file():
            bp = root / bp
        if not bp.is_file():
            raise ApoError(f"{origin}: base: run config {base} does not exist")
        base = read_yaml_mapping(bp, "run config")
    for key, values in spec.grid.items():
        if not values:
            raise ApoError(f"{origin}: grid.{key}: empty list (give at least one value)")
    if spec.methods is not None and not spec.methods:
        raise ApoError(f"{origin}: methods: empty (leave it out, or name at least one method)")
    g = spec.ray.num_gpus_per_cell
    if isinstance(g, str) and g != "auto" or isinstance(g, int) and g < 0:
        raise ApoError(f"{origin}: ray.num_gpus_per_cell: 'auto' or a whole number >= 0")
    return spec, base


def _model_label(name: str | None) -> str:
    if name is None:
        return "default"
    return str(name).rstrip("/").split("/")[-1] if "/" in str(name) else str(name)


def _slug(value: Any) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", "null" if value is None else str(value)).strip("-.")
    return s[-32:].strip("-.") or "x"


def expand(spec: SweepConfig, base: dict, origin: str = "sweep") -> list[Cell]:
    """Every cell of the grid, validated, in grid order (see ``order_for_engines``)."""
    methods = spec.methods or {None: {}}
    keys = list(spec.grid)
    varying = [k for k in keys if len(spec.grid[k]) > 1]
    cells: list[Cell] = []
    seen: dict[str, dict] = {}
    for method, mo in methods.items():
        m_over = _flatten(mo or {})
        clash = sorted(set(m_over) & set(keys))
        if clash:
            raise ApoError(f"{origin}: methods.{method} and grid both set {', '.join(clash)}; set it in one place")
        for combo in itertools.product(*(spec.grid[k] for k in keys)):
            g_over = dict(zip(keys, combo))
            overrides = {**m_over, **g_over}
            where = f"{origin} (cell {', '.join(f'{k}={v}' for k, v in g_over.items())}{f', method={method}' if method else ''})"
            cfg = build_config(json.loads(json.dumps(base)), overrides, origin=where)
            text = dump_config(cfg)
            digest = hashlib.sha256(text.encode()).hexdigest()[:8]
            parts = ([_slug(method)] if method and len(methods) > 1 else []) + [_axis_slug(k, g_over[k]) for k in varying]
            slug = "__".join(parts) or (_slug(method) if method else "cell")
            cid = f"{slug}-{digest}"
            if cid in seen:
                continue  # two grid points with the same resolved config: one run
            seen[cid] = g_over
            cells.append(Cell(cid, method, overrides, _labels(cfg, method, g_over), cfg))
    for axis, key in (("target", "target.model"), ("optimizer", "optimizer.model")):
        raw: dict[str, set] = {}
        for c in cells:  # two different names with the same short label: show them as given
            raw.setdefault(c.labels[axis], set()).add(str(_get(c.config, key)))
        for c in cells:
            if len(raw[c.labels[axis]]) > 1:
                c.labels[axis] = str(_get(c.config, key))
    return cells


def _get(cfg: RunConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _axis_slug(key: str, value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        short = {"seed": "s"}.get(key, key.split(".")[-1].replace("_", "")[:8])
        return _slug(f"{short}{value}")
    return _slug(value)


def _labels(cfg: RunConfig, method: str | None, g_over: dict) -> dict[str, Any]:
    labels = {"task": cfg.task, "method": method or cfg.search.proposer, "proposer": cfg.search.proposer,
              "selector": cfg.selection.selector, "target": _model_label(cfg.target.model),
              "optimizer": _model_label(cfg.optimizer.model) if cfg.optimizer.model is not None else "= target",
              "seed": cfg.seed}
    for k, v in g_over.items():
        if k not in ("task", "seed", "target.model", "optimizer.model", "search.proposer", "selection.selector"):
            labels[k] = v
    return labels


# -- engine grouping ----------------------------------------------------------------------------


def engine_keys(cfg: RunConfig) -> frozenset:
    """What ``load_engine`` keys its backends on, for the target and optimizer of ``cfg``."""
    from apo_local import engine as eng

    settings = [cfg.target.settings(cfg.seed), cfg.optimizer_engine_config().settings(cfg.seed)]
    public = getattr(eng, "engine_key", None)
    if public is not None:
        return frozenset(public(s) for s in settings)
    from apo_local.models import resolve_model

    def folder(name):
        try:
            return str(resolve_model(name, prepare_if_missing=False))
        except ApoError:
            return str(name)

    return frozenset((folder(s.model), s.backend, s.resolved()) for s in settings)


def _pair(cfg: RunConfig) -> str:
    return json.dumps([cfg.target.model_dump(mode="json"), cfg.optimizer_engine_config().model_dump(mode="json")],
                      sort_keys=True)


def order_for_engines(cells: list[Cell]) -> list[Cell]:
    """Cells needing the same (target, optimizer) engines next to each other (then by seed); stable."""
    first: dict[str, int] = {}
    for i, c in enumerate(cells):
        first.setdefault(_pair(c.config), i)
    return sorted(cells, key=lambda c: (first[_pair(c.config)], c.config.seed))


def gpus_for(cfg: RunConfig) -> int:
    from apo_local.engine.placement import ray_gpus  # both engines' GPUs when the roles load different models

    return ray_gpus(cfg.target.tensor_parallel_size, cfg.optimizer_engine_config().tensor_parallel_size,
                    len(engine_keys(cfg)) == 1)


# -- running one cell ---------------------------------------------------------------------------

_HELD: frozenset = frozenset()  # engine keys the previous cell of this process used


def run_cell(cell_dir: str | Path, config_text: str, release: bool = True) -> str:
    """Run, resume or skip one cell; returns "skipped", "resumed" or "ran". Frees the engines the
    previous cell of this process used when this one needs others (``release``)."""
    global _HELD
    from apo_local.optimize import optimize, resume

    d = Path(cell_dir)
    if (d / "results.json").is_file():
        return "skipped"
    cfg = build_config(yaml.safe_load(config_text), origin=str(d / "config.yaml"))
    if (d / "config.yaml").is_file():
        on_disk = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
        if on_disk != yaml.safe_load(config_text):
            raise ApoError(f"{d} holds a run with a different config; move it away or use another --out")
    keys = engine_keys(cfg)
    if release and _HELD and not _HELD <= keys:
        from apo_local.engine import shutdown_engines

        log.info("releasing the previous cell's engines")
        shutdown_engines()
    _HELD = keys
    if (d / "checkpoint.json").is_file():
        resume(d)
        return "resumed"
    optimize(cfg, d, overwrite=True)  # overwrite: a run that died before its first checkpoint
    return "ran"


def _pack(d: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.name != ".lock":
                tar.add(p, arcname=str(p.relative_to(d)))
    return buf.getvalue()


def _unpack(data: bytes, d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    (d / "rounds").mkdir(exist_ok=True, mode=0o700)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(d, filter="data")


def _ray_cell(cell_dir: str, config_text: str, ship_back: bool) -> dict:
    """Body of the Ray task: runs in a worker process (which keeps its engines for the next cell)."""
    t0 = time.time()
    status = run_cell(cell_dir, config_text)
    out = {"status": status, "seconds": round(time.time() - t0, 1), "node": os.uname().nodename}
    if ship_back and status != "skipped":
        out["archive"] = _pack(Path(cell_dir))
    return out


# -- the sweep ----------------------------------------------------------------------------------


class _SweepLock:
    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = os.open(out / ".sweep.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ApoError(f"{out} is in use by another apo-local sweep") from None

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class SweepResult:
    out: Path
    cells: list[Cell]
    status: dict[str, str]  # cell id -> skipped / ran / resumed / failed: ...
    rows: list[dict]

    @property
    def failed(self) -> list[str]:
        return [c for c, s in self.status.items() if s.startswith("failed")]


def run_sweep(spec: SweepConfig, base: dict, out: str | Path, *, use_ray: bool = False,
              origin: str = "sweep", on_cell: Callable[[Cell, str], None] | None = None) -> SweepResult:
    """Run every cell that has no results yet; write the manifest and the results tables."""
    out = Path(out)
    cells = order_for_engines(expand(spec, base, origin))
    lock = _SweepLock(out)
    try:
        os.chmod(out, 0o700)
        atomic_write(out / SWEEP_CONFIG, yaml.safe_dump(
            {**spec.model_dump(mode="json", exclude={"base"}), "base": base}, sort_keys=False))
        status = {c.id: _initial_status(out / c.id) for c in cells}
        _write_manifest(out, cells, status)
        log.info("sweep: %d cells (%d done) in %s%s", len(cells), sum(s == "done" for s in status.values()), out,
                 " on Ray" if use_ray or spec.ray.address else "")
        if use_ray or spec.ray.address:
            _run_on_ray(spec.ray, cells, out, status, on_cell)
        else:
            for i, cell in enumerate(cells, 1):
                if status[cell.id] == "done":
                    continue
                log.info("cell %d/%d: %s", i, len(cells), cell.id)
                status[cell.id] = "running"
                _write_manifest(out, cells, status)
                try:
                    status[cell.id] = run_cell(out / cell.id, cell.config_text)
                except ApoError as exc:
                    status[cell.id] = f"failed: {exc}"
                    log.error("cell %s failed: %s", cell.id, exc)
                except Exception as exc:  # an engine or a bug: record it, go on with the other cells
                    status[cell.id] = f"failed: {type(exc).__name__}: {exc}".splitlines()[0]
                    log.exception("cell %s failed", cell.id)
                except BaseException:  # Ctrl-C: stop; the same command resumes
                    status[cell.id] = "interrupted"
                    _write_manifest(out, cells, status)
                    raise
                _write_manifest(out, cells, status)
                if on_cell:
                    on_cell(cell, status[cell.id])
        _write_manifest(out, cells, status)
        rows = write_tables(out)
        return SweepResult(out, cells, status, rows)
    finally:
        lock.close()


def _initial_status(d: Path) -> str:
    if (d / "results.json").is_file():
        return "done"
    return "interrupted" if (d / "checkpoint.json").is_file() else "pending"


def _write_manifest(out: Path, cells: list[Cell], status: dict[str, str]) -> None:
    write_json(out / MANIFEST, {"cells": [
        {"id": c.id, "method": c.method, "overrides": c.overrides, "labels": c.labels,
         "status": "done" if (out / c.id / "results.json").is_file() and not status[c.id].startswith("failed")
         else status[c.id]} for c in cells]})


def _run_on_ray(opts: RayOptions, cells: list[Cell], out: Path, status: dict[str, str],
                on_cell: Callable[[Cell, str], None] | None) -> None:
    if all(status[c.id] == "done" for c in cells):
        return
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage statistics (read by ray.init)
    try:
        import ray
    except ImportError:
        raise ApoError("--ray needs Ray: pip install 'apo-local[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=opts.address, include_dashboard=False, logging_level=logging.WARNING)
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    # CPU cells: a worker is reused, and keeps its engines for the next cell of the same pair.
    # GPU cells: one cell per worker (Ray's default for GPU tasks), so GPU memory is always released.
    remote_cpu, remote_gpu = ray.remote(_ray_cell), ray.remote(max_calls=1)(_ray_cell)
    pending: dict[Any, Cell] = {}
    for cell in cells:
        if status[cell.id] == "done":
            continue
        g = opts.num_gpus_per_cell
        gpus = (gpus_for(cell.config) if has_gpus else 0) if g == "auto" else int(g)
        ref = (remote_gpu if gpus else remote_cpu).options(num_gpus=gpus, num_cpus=opts.num_cpus_per_cell, name=f"apo-cell:{cell.id}",
                             max_retries=0).remote(str((out / cell.id).resolve()), cell.config_text, opts.ship_back)
        pending[ref] = cell
        status[cell.id] = "queued"
    _write_manifest(out, cells, status)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            try:
                res = ray.get(done[0])
                if "archive" in res and not (out / cell.id / "results.json").is_file():
                    _unpack(res["archive"], out / cell.id)
                status[cell.id] = res["status"]
                log.info("cell %s: %s on %s in %ss", cell.id, res["status"], res["node"], res["seconds"])
            except Exception as exc:  # RayTaskError wraps the cell's own exception
                cause = getattr(exc, "cause", None) or exc
                msg = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
                status[cell.id] = f"failed: {msg}"
                log.error("cell %s failed: %s", cell.id, msg)
            _write_manifest(out, cells, status)
            if on_cell:
                on_cell(cell, status[cell.id])
    except BaseException:
        for ref, cell in pending.items():
            ray.cancel(ref)
            status[cell.id] = "interrupted"
        _write_manifest(out, cells, status)
        raise


# -- results tables -----------------------------------------------------------------------------

ID_COLUMNS = ["task", "method", "proposer", "selector", "target", "optimizer", "seed"]
VALUE_COLUMNS = ["test_initial", "test_best", "test_selected", "test_gain", "rounds",
                 "target_calls", "target_prompts", "target_input_tokens", "target_output_tokens",
                 "optimizer_calls", "optimizer_prompts", "optimizer_input_tokens", "optimizer_output_tokens",
                 "optimizer_tokens", "wall_seconds"]


def load_manifest(out: str | Path) -> list[dict]:
    p = Path(out) / MANIFEST
    if not p.is_file():
        raise ApoError(f"{out} is not a sweep directory (no {MANIFEST})")
    return json.loads(p.read_text(encoding="utf-8"))["cells"]


def cell_rows(out: str | Path) -> list[dict]:
    """One row per cell of the manifest; value columns are empty for cells without results."""
    out = Path(out)
    manifest = load_manifest(out)
    extra = sorted({k for c in manifest for k in c["labels"] if k not in ID_COLUMNS})
    rows = []
    for c in manifest:
        row = {"kind": "cell", "cell": c["id"], "status": c["status"], "n": 1}
        row.update({k: c["labels"].get(k) for k in ID_COLUMNS + extra})
        res_file = out / c["id"] / "results.json"
        if res_file.is_file():
            r = json.loads(res_file.read_text(encoding="utf-8"))
            m = r["metric"]
            u = r.get("usage", {})
            t, o = u.get("target", {}), u.get("optimizer", {})
            row.update(
                status="done", metric=m, test_initial=r["initial_test"]["metrics"][m],
                test_best=r["best_test"]["metrics"][m], test_selected=r["selected_test"]["metrics"][m],
                rounds=r["rounds_completed"], stop_reason=r["stop_reason"],
                target_calls=t.get("calls"), target_prompts=t.get("prompts"),
                target_input_tokens=t.get("input_tokens"), target_output_tokens=t.get("output_tokens"),
                optimizer_calls=o.get("calls"), optimizer_prompts=o.get("prompts"),
                optimizer_input_tokens=o.get("input_tokens"), optimizer_output_tokens=o.get("output_tokens"),
                optimizer_tokens=(o.get("input_tokens") or 0) + (o.get("output_tokens") or 0),
                wall_seconds=r.get("time", {}).get("seconds"))
            row["test_gain"] = row["test_best"] - row["test_initial"]
        rows.append(row)
    return rows


def group_columns(rows: list[dict]) -> list[str]:
    skip = {"kind", "cell", "status", "n", "seed", "metric", "stop_reason", *VALUE_COLUMNS}
    return [k for k in rows[0] if k not in skip] if rows else []


def aggregate(rows: list[dict]) -> list[dict]:
    """mean and std (sample; 0 for one cell) of every value column per group (all axes but the seed)."""
    keys = group_columns(rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "done":
            groups.setdefault(tuple(str(r.get(k)) for k in keys), []).append(r)
    out = []
    for members in groups.values():
        mean = {"kind": "mean", "cell": "", "status": "", "n": len(members), **{k: members[0].get(k) for k in keys},
                "seed": ",".join(str(m["seed"]) for m in members), "metric": members[0].get("metric")}
        std = dict(mean, kind="std")
        for col in VALUE_COLUMNS:
            vals = [float(m[col]) for m in members if m.get(col) is not None]
            if vals:
                mean[col] = statistics.fmean(vals)
                std[col] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out += [mean, std]
    return out


def _fmt(v: Any, col: str = "") -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if col.startswith("test_"):
            return f"{v:.3f}"
        return f"{v:.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 1000:
        return f"{v:,}"
    return str(v)


def _md_table(header: list[str], body: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in body]
    return "\n".join(lines)


SHORT = {"test_initial": "test initial", "test_best": "test best", "test_selected": "test selected",
         "test_gain": "gain", "target_calls": "T calls", "target_prompts": "T prompts",
         "target_input_tokens": "T in tok", "target_output_tokens": "T out tok", "optimizer_calls": "O calls",
         "optimizer_prompts": "O prompts", "optimizer_input_tokens": "O in tok",
         "optimizer_output_tokens": "O out tok", "optimizer_tokens": "O tokens", "wall_seconds": "wall s"}


def optimizer_size_rows(rows: list[dict]) -> list[dict]:
    """The optimizer-size view: per (task, target, method, other axes) series and optimizer model,
    test metric and optimizer tokens (mean +- std over seeds). Empty unless optimizers vary."""
    done = [r for r in rows if r["status"] == "done"]
    if len({r["optimizer"] for r in done}) < 2:
        return []
    series_keys = [k for k in group_columns(rows) if k != "optimizer"]
    params = {}
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in done:
        groups.setdefault((tuple(str(r.get(k)) for k in series_keys), r["optimizer"]), []).append(r)
    for (series, opt), members in groups.items():
        if opt not in params:
            params[opt] = model_parameters(members[0], opt)
        row = {"series": " / ".join(s for s, k in zip(series, series_keys)
                                    if len({str(x.get(k)) for x in done}) > 1) or "all",
               "task": members[0]["task"], "target": members[0]["target"], "optimizer": opt,
               "parameters": params[opt], "n": len(members), "metric": members[0]["metric"]}
        for col in ("test_best", "test_initial", "test_gain", "optimizer_tokens", "wall_seconds"):
            vals = [float(m[col]) for m in members if m.get(col) is not None]
            row[col] = statistics.fmean(vals) if vals else math.nan
            row[col + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(row)
    out.sort(key=lambda r: (r["series"], r["parameters"] or 0, r["optimizer"]))
    return out


def model_parameters(row: dict, label: str) -> int | None:
    """Parameter count from the safetensors headers of the optimizer's folder (None if unknown)."""
    import struct

    from apo_local.models import resolve_model

    name = row["target"] if label == "= target" else label
    try:
        folder = resolve_model(None if name == "default" else name, prepare_if_missing=False)
    except Exception:
        return None
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with open(f, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total or None


def human_params(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def write_tables(out: str | Path) -> list[dict]:
    """results.csv and results.md (+ optimizer-size.csv/.png when optimizers vary) from the cells on disk."""
    out = Path(out)
    rows = cell_rows(out)
    aggs = aggregate(rows)
    extra = [k for k in (rows[0] if rows else {}) if k not in ("kind", "cell", "status", "n", *ID_COLUMNS)
             and k not in VALUE_COLUMNS and k not in ("metric", "stop_reason")]
    cols = ["kind", "cell", "status", "n", *ID_COLUMNS, *extra, "metric", *VALUE_COLUMNS, "stop_reason"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows + aggs:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic_write(out / "results.csv", buf.getvalue())

    keys = group_columns(rows)
    shown_ids = [k for k in keys if len({str(r.get(k)) for r in rows}) > 1 or k in ("task", "target", "optimizer")]
    vcols = [c for c in VALUE_COLUMNS if c not in ("test_selected",)]
    md = [f"# Sweep results: {out.name}", "",
          f"{sum(r['status'] == 'done' for r in rows)} of {len(rows)} cells done. Metric: "
          f"{', '.join(sorted({str(r.get('metric')) for r in rows if r.get('metric')})) or '-'} (test split). "
          "T = target, O = optimizer; tokens are input + output.", "", "## Cells", ""]
    md.append(_md_table(["cell", "status", *shown_ids, "seed", *(SHORT.get(c, c) for c in vcols)],
                        [[r["cell"], r["status"], *(_fmt(r.get(k)) for k in shown_ids), _fmt(r.get("seed")),
                          *(_fmt(r.get(c), c) for c in vcols)] for r in rows]))
    means = [a for a in aggs if a["kind"] == "mean"]
    stds = {id(m): s for m, s in zip(aggs[0::2], aggs[1::2])}
    if means:
        md += ["", "## Mean ± std over seeds (per group: every axis but the seed)", ""]
        md.append(_md_table([*shown_ids, "n", *(SHORT.get(c, c) for c in vcols)],
                            [[*(_fmt(m.get(k)) for k in shown_ids), str(m["n"]),
                              *(_pm(m.get(c), stds[id(m)].get(c), c) for c in vcols)] for m in means]))
    size_rows = optimizer_size_rows(rows)
    if size_rows:
        md += ["", "## Optimizer size", "", "Same task and target, different optimizer models "
               "(mean ± std over seeds; sorted by parameter count).", ""]
        md.append(_md_table(["series", "optimizer", "params", "n", "test best", "test initial", "gain",
                             "optimizer tokens", "wall s"],
                            [[r["series"], r["optimizer"], human_params(r["parameters"]), str(r["n"]),
                              _pm(r["test_best"], r["test_best_std"], "test_"),
                              _fmt(r["test_initial"], "test_"), _pm(r["test_gain"], r["test_gain_std"], "test_"),
                              _pm(r["optimizer_tokens"], r["optimizer_tokens_std"]),
                              _pm(r["wall_seconds"], r["wall_seconds_std"])] for r in size_rows]))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(size_rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(size_rows)
        atomic_write(out / "optimizer-size.csv", buf.getvalue())
        try:
            from apo_local.report.plots import optimizer_size_plot

            (out / "optimizer-size.png").write_bytes(optimizer_size_plot(size_rows))
            md += ["", "![optimizer size](optimizer-size.png)"]
        except ImportError:  # matplotlib missing: the table is still there
            log.warning("matplotlib is not installed: no optimizer-size.png")
    atomic_write(out / "results.md", "\n".join(md) + "\n")
    return rows + aggs


def _pm(mean: Any, std: Any, col: str = "") -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{_fmt(float(mean), col)} ± {_fmt(float(std or 0.0), col)}"


# -- command line -------------------------------------------------------------------------------

import click  # noqa: E402


@click.command("sweep", context_settings={"max_content_width": 120})
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="Sweep config YAML (base, grid, methods, ray); see configs/sweep-example.yaml.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep directory (one run directory per cell).")
@click.option("--ray", "use_ray", is_flag=True, help="Run every cell as a Ray task (local instance, or ray.address).")
@click.option("--ray-address", help="Connect to this Ray cluster (overrides ray.address; implies --ray).")
@click.option("--dry-run", is_flag=True, help="List the cells and their state; run nothing.")
@click.option("--report", "with_report", is_flag=True, help="Write DIR/report.html (and each cell's) at the end.")
def sweep_command(config_file, out, use_ray, ray_address, dry_run, with_report):
    """Run a grid of optimizations; resumable; writes results.csv and results.md."""
    spec, base = load_sweep(config_file)
    if ray_address:
        spec.ray.address, use_ray = ray_address, True
    if dry_run:
        cells = order_for_engines(expand(spec, base, str(config_file)))
        for c in cells:
            click.echo(f"{_initial_status(Path(out) / c.id):<12} {c.id}  "
                       + " ".join(f"{k}={v}" for k, v in c.overrides.items()))
        click.echo(f"{len(cells)} cells")
        return
    try:
        result = run_sweep(spec, base, out, use_ray=use_ray, origin=str(config_file))
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to resume the sweep", err=True)
        raise SystemExit(130) from None
    counts: dict[str, int] = {}
    for s in result.status.values():
        counts[s.split(":")[0]] = counts.get(s.split(":")[0], 0) + 1
    click.echo(f"{len(result.cells)} cells: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for cid in result.failed:
        click.echo(f"  {cid}: {result.status[cid]}", err=True)
    click.echo(f"results: {Path(out) / 'results.md'}  {Path(out) / 'results.csv'}")
    if with_report:
        from apo_local.report import write_report

        click.echo(f"report: {write_report(out, cells=True)}")
    if result.failed:
        raise SystemExit(1)
