"""Engines: one protocol (``Engine``), a vLLM backend, a transformers fallback, a result cache.

``load_engine(settings)`` is the one way in: it resolves the model (alias or folder), starts the
backend once per process for a given model and settings, and wraps it in the on-disk cache.
Target and optimizer roles share an engine when they name the same model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from apo_local.engine.cache import CachedEngine, ResultCache, default_cache_path
from apo_local.engine.protocol import ChoiceScores, Engine, Generation, GenerationRequest
from apo_local.engine.roles import ROLES, RoleEngine, Trace
from apo_local.engine.settings import EngineSettings, has_cuda_gpu
from apo_local.errors import ApoError

__all__ = [
    "CachedEngine", "ChoiceScores", "Engine", "EngineSettings", "Generation", "GenerationRequest",
    "ROLES", "RoleEngine", "Trace", "load_engine", "load_role_engines", "engine_key", "has_cuda_gpu",
    "shutdown_engines",
]

_LOADED: dict[tuple, object] = {}  # one backend per model + settings in this process
_STARTS = 0  # backends this process started or tried to start
_CACHED: dict[tuple, CachedEngine] = {}


def engine_key(settings: EngineSettings) -> tuple:
    """The backend's identity: the model folder and the settings that change its outputs or memory. Not the
    alias spelling, and not the seed (every request carries its own), so seeds and aliases share one engine."""
    from apo_local.models import resolve_model

    return (settings.backend, replace(settings.resolved(), model=str(resolve_model(settings.model)), seed=0))


def load_engine(settings: EngineSettings, cache_path: Path | str | None | bool = None,
                role: str | None = None) -> CachedEngine:
    """Start (or reuse) the backend for ``settings``. ``cache_path``: None = default, False = no disk cache.
    ``role`` (target / optimizer) only names the settings to change in a start failure's message."""
    global _STARTS
    key = engine_key(settings)
    path = Path(key[1].model)
    if key not in _LOADED:
        _STARTS += 1
        if settings.backend == "vllm":
            from apo_local.engine.vllm_engine import VLLMEngine

            _LOADED[key] = VLLMEngine(path, settings, role)
        elif settings.backend == "transformers":
            from apo_local.engine.hf_engine import TransformersEngine

            if settings.engine_args:
                raise ApoError(f"{role or 'target'}.engine_args: vLLM engine arguments; the transformers backend takes none")
            _LOADED[key] = TransformersEngine(path, settings)
        else:
            raise ApoError(f"unknown engine backend {settings.backend!r} (use vllm or transformers)")
    cache_file = None if cache_path is False else Path(cache_path or default_cache_path()).resolve()
    if (key, cache_file) not in _CACHED:
        _CACHED[(key, cache_file)] = CachedEngine(_LOADED[key], ResultCache(cache_file) if cache_file else None)
    return _CACHED[(key, cache_file)]


def load_role_engines(target: EngineSettings, optimizer: EngineSettings,
                      cache_path: Path | str | None | bool = None,
                      record: Path | None = None) -> tuple[CachedEngine, CachedEngine]:
    """The target's and the optimizer's engines: one shared engine when they are the same model and
    settings; otherwise two, placed on their own GPUs or splitting the GPU memory (engine/placement.py).
    ``record``: a file to write the plan to once both engines run (the run directory's ``engines.json``)."""
    from apo_local.engine.placement import gpu_memory_gib, plan_engines
    from apo_local.engine.settings import cuda_devices

    kt, ko = engine_key(target), engine_key(optimizer)
    shared = kt == ko
    gpus = cuda_devices() if has_cuda_gpu() else 0
    vllm_pair = target.backend == optimizer.backend == "vllm"
    plan = plan_engines(target, optimizer, shared or not vllm_pair, gpus, (Path(kt[1].model), Path(ko[1].model)),
                        gpu_memory_gib() if gpus and not shared else None)
    first = load_engine(plan.target, cache_path, role="target")
    second = load_engine(plan.optimizer, cache_path, role="optimizer")
    if record is not None:  # once both run: a run that failed to start leaves nothing behind
        Path(record).write_text(plan.to_json() + "\n", encoding="utf-8")
    return first, second


def engines_started() -> int:
    """How many engines this process started or tried to start (their threads may outlive them)."""
    return _STARTS


def shutdown_engines_within(seconds: float) -> bool:
    """``shutdown_engines`` with a deadline (a hung engine process must not hang the caller);
    True if it finished in time."""
    import threading

    done = threading.Event()

    def stop() -> None:
        try:
            shutdown_engines()
        except Exception:  # exiting anyway: a failed shutdown must not change the exit code
            pass
        finally:
            done.set()

    threading.Thread(target=stop, daemon=True, name="apo-shutdown").start()
    return done.wait(seconds)


def shutdown_engines(only: CachedEngine | None = None) -> None:
    """Stop the backends this process started (all, or just ``only``'s), engine worker processes included."""
    backends = [only.inner] if only is not None else list(_LOADED.values())
    for k, cached in list(_CACHED.items()):
        if cached.inner in backends:
            if cached.cache:
                cached.cache.close()
            del _CACHED[k]
    for k, backend in list(_LOADED.items()):
        if backend in backends:
            close = getattr(backend, "close", None)
            if close:
                close()
            del _LOADED[k]
