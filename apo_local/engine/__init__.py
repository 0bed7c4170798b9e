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
    "ROLES", "RoleEngine", "Trace", "load_engine", "engine_key", "has_cuda_gpu", "shutdown_engines",
]

_LOADED: dict[tuple, object] = {}  # one backend per model + settings in this process
_CACHED: dict[tuple, CachedEngine] = {}


def engine_key(settings: EngineSettings) -> tuple:
    """The backend's identity: the model folder and the settings that change its outputs or memory. Not the
    alias spelling, and not the seed (every request carries its own), so seeds and aliases share one engine."""
    from apo_local.models import resolve_model

    return (settings.backend, replace(settings.resolved(), model=str(resolve_model(settings.model)), seed=0))


def load_engine(settings: EngineSettings, cache_path: Path | str | None | bool = None) -> CachedEngine:
    """Start (or reuse) the backend for ``settings``. ``cache_path``: None = default, False = no disk cache."""
    key = engine_key(settings)
    path = Path(key[1].model)
    if key not in _LOADED:
        if settings.backend == "vllm":
            from apo_local.engine.vllm_engine import VLLMEngine

            _LOADED[key] = VLLMEngine(path, settings)
        elif settings.backend == "transformers":
            from apo_local.engine.hf_engine import TransformersEngine

            _LOADED[key] = TransformersEngine(path, settings)
        else:
            raise ApoError(f"unknown engine backend {settings.backend!r} (use vllm or transformers)")
    cache_file = None if cache_path is False else Path(cache_path or default_cache_path()).resolve()
    if (key, cache_file) not in _CACHED:
        _CACHED[(key, cache_file)] = CachedEngine(_LOADED[key], ResultCache(cache_file) if cache_file else None)
    return _CACHED[(key, cache_file)]


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
