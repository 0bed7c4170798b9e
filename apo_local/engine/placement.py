"""Where the target and optimizer engines go on GPUs, and how much memory each may take.

When both roles load the same model they share one engine and nothing here applies. When they
load different models (a small target beside a large optimizer is a headline use):

- **two engines on their own GPUs** when the machine has enough (target's tensor-parallel size +
  the optimizer's): each engine sees only its devices (``CUDA_VISIBLE_DEVICES`` per engine) and
  keeps the usual memory fraction;
- **a memory split on shared GPUs** otherwise: each engine's ``gpu_memory_utilization`` is its
  weights (from the safetensors headers, per GPU) plus a share of what remains for KV cache, in
  proportion to its KV bytes per token (so both hold about as many tokens of context), within a
  total of ``BUDGET`` of the GPU. A role whose fraction is set explicitly keeps it; the other gets
  the rest. Without the GPU's size (no NVML) the split is by weight size alone.

The plan is written to the run directory (``engines.json``). Sweeps on Ray ask for the GPUs of
both engines when they differ (``ray_gpus``).

Everything here is pure arithmetic over settings and numbers, except ``gpu_memory_gib`` (NVML,
which does not initialise CUDA).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from apo_local.engine.settings import EngineSettings

BUDGET = 0.88  # of each GPU, for both engines together (CUDA contexts and activations need the rest)
SOLO = 0.85  # one engine on its own GPUs (vLLM's usual 0.9, less a margin)
MIN_FRACTION = 0.05


@dataclass
class EnginePlan:
    target: EngineSettings
    optimizer: EngineSettings
    how: str  # "shared engine", "separate GPUs", "memory split", "as configured", "cpu"
    detail: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "how": self.how,
                **self.detail,
                "target": _role_view(self.target),
                "optimizer": _role_view(self.optimizer),
            },
            indent=2,
        )


def _role_view(s: EngineSettings) -> dict:
    return {
        "model": s.model,
        "gpu_memory_utilization": s.gpu_memory_utilization,
        "device": s.device,
        "tensor_parallel_size": s.tensor_parallel_size,
        "max_model_len": s.max_model_len,
        "kv_cache_gb": s.kv_cache_gb,
    }


def ray_gpus(target_tp: int, optimizer_tp: int, shared: bool) -> int:
    """GPUs a sweep cell asks Ray for: one engine's when the roles share it, both engines' otherwise."""
    return max(target_tp, optimizer_tp) if shared else target_tp + optimizer_tp


def place_devices(target_tp: int, optimizer_tp: int, visible: list[str]) -> tuple[str, str] | None:
    """Devices per role (``CUDA_VISIBLE_DEVICES`` values, taken from the ``visible`` list) when there
    are GPUs enough for each engine to have its own; None otherwise."""
    if len(visible) < target_tp + optimizer_tp:
        return None
    return ",".join(visible[:target_tp]), ",".join(visible[target_tp : target_tp + optimizer_tp])


def memory_split(
    weights: tuple[float, float],
    kv_per_token: tuple[float | None, float | None],
    total: float | None,
    fixed: tuple[float | None, float | None] = (None, None),
    budget: float = BUDGET,
) -> tuple[float, float]:
    """GPU memory fractions (target, optimizer) for two engines sharing GPUs.

    ``weights``: bytes per GPU of each model; ``kv_per_token``: KV bytes per token (None: unknown,
    counted as the other's); ``total``: bytes per GPU (None: unknown, split by weights); ``fixed``:
    fractions set by the user, kept as they are."""
    ft, fo = fixed
    if ft is not None and fo is not None:
        return ft, fo
    if ft is not None or fo is not None:  # one set: the other gets the rest of the budget
        rest = max(MIN_FRACTION, round(budget - (ft if ft is not None else fo), 3))
        return (ft, rest) if ft is not None else (rest, fo)
    wt, wo = weights
    if not total:
        share_t = wt / (wt + wo) if wt + wo > 0 else 0.5
        share_t = min(max(share_t, 0.15), 0.85)  # each keeps room for its KV cache
        return round(budget * share_t, 3), round(budget * (1 - share_t), 3)
    kt, ko = kv_per_token
    kt = kt or ko or 1.0
    ko = ko or kt
    free = budget * total - wt - wo
    if free <= 0:
        return round(budget * wt / (wt + wo), 3), round(budget * wo / (wt + wo), 3)
    t = (wt + free * kt / (kt + ko)) / total
    o = (wo + free * ko / (kt + ko)) / total
    return max(MIN_FRACTION, round(t, 3)), max(MIN_FRACTION, round(o, 3))


def gpu_memory_gib(index: int = 0) -> float | None:
    """Total memory of one GPU from NVML (no CUDA context is created), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).total / (1 << 30)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def visible_devices(gpus: int, environ: dict | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()][:gpus]
    return [str(i) for i in range(gpus)]


def plan_engines(
    target: EngineSettings,
    optimizer: EngineSettings,
    shared: bool,
    gpus: int,
    model_paths: tuple[Path, Path] | None = None,
    gpu_gib: float | None = None,
    environ: dict | None = None,
) -> EnginePlan:
    """The settings each role's engine starts with (see the module docstring)."""
    if shared:
        return EnginePlan(target, optimizer, "shared engine")
    if gpus <= 0:
        return EnginePlan(target, optimizer, "cpu")
    if target.device is not None or optimizer.device is not None:
        return EnginePlan(target, optimizer, "as configured")
    tp_t, tp_o = target.tensor_parallel_size, optimizer.tensor_parallel_size
    devices = place_devices(tp_t, tp_o, visible_devices(gpus, environ))
    if devices is not None:
        t = replace(target, device=devices[0], gpu_memory_utilization=target.gpu_memory_utilization or SOLO)
        o = replace(optimizer, device=devices[1], gpu_memory_utilization=optimizer.gpu_memory_utilization or SOLO)
        return EnginePlan(t, o, "separate GPUs", {"gpus": gpus})
    from apo_local.engine.modelinfo import kv_bytes_per_token, weight_bytes

    weights = (0.0, 0.0)
    kv: tuple = (None, None)
    if model_paths is not None:
        weights = (weight_bytes(model_paths[0]) / tp_t, weight_bytes(model_paths[1]) / tp_o)
        kv = (_per_gpu(kv_bytes_per_token(model_paths[0]), tp_t), _per_gpu(kv_bytes_per_token(model_paths[1]), tp_o))
    total = gpu_gib * (1 << 30) if gpu_gib else None
    ft, fo = memory_split(weights, kv, total, (target.gpu_memory_utilization, optimizer.gpu_memory_utilization))
    how = "as configured" if target.gpu_memory_utilization and optimizer.gpu_memory_utilization else "memory split"
    detail = {
        "gpus": gpus,
        "gpu_gib": round(gpu_gib, 1) if gpu_gib else None,
        "weights_gib": [round(w / (1 << 30), 3) for w in weights],
        "budget": BUDGET,
    }
    return EnginePlan(
        replace(target, gpu_memory_utilization=ft), replace(optimizer, gpu_memory_utilization=fo), how, detail
    )


def _per_gpu(value: int | None, tp: int) -> float | None:
    return value / tp if value else None
