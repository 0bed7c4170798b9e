"""Engines: one protocol (``Engine``), a vLLM backend, a transformers fallback, a result cache.

``load_engine(settings)`` is the one way in: it resolves the model (alias or folder), starts the
backend once per process for a given model and settings, and wraps it in the on-disk cache.
Target and optimizer roles share an engine when they name the same model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from apo_local.engine.cache import CachedEngine, ResultCache, default_cache_path
from apo_local.engine.protocol import ChoiceScores, Engine, Generation, GenerationRequest
from apo_local.engine.roles import ROLES, RoleEngine, Trace
from apo_local.engine.settings import EngineSettings, has_cuda_gpu
from apo_local.support.errors import ApoError

__all__ = [
    "CachedEngine",
    "ChoiceScores",
    "Engine",
    "EngineSettings",
    "Generation",
    "GenerationRequest",
    "LazyBackend",
    "ROLES",
    "RoleEngine",
    "Trace",
    "load_engine",
    "load_role_engines",
    "engine_key",
    "has_cuda_gpu",
    "running_engines",
    "shutdown_engines",
    "model_of",
    "role_models",
]

log = logging.getLogger("apo_local")

_LOADED: dict[tuple, object] = {}  # one backend per model + settings in this process
_STARTS = 0  # backends this process started or tried to start
_CACHED: dict[tuple, CachedEngine] = {}


def engine_key(settings: EngineSettings) -> tuple:
    """The backend's identity: the model folder and the settings that change its outputs or memory. Not the
    alias spelling, and not the seed (every request carries its own), so seeds and aliases share one engine."""
    from apo_local.models.registry import resolve_model

    if settings.backend == "openai":  # the model is a served name, not a folder here
        return (settings.backend, replace(settings, seed=0))
    return (settings.backend, replace(settings.resolved(), model=str(resolve_model(settings.model)), seed=0))


def load_engine(
    settings: EngineSettings,
    cache_path: Path | str | None | bool = None,
    role: str | None = None,
    *,
    lazy: bool = False,
) -> CachedEngine:
    """Start (or reuse) the backend for ``settings``. ``cache_path``: None = default, False = no disk cache.
    ``role`` (target / optimizer) only names the settings to change in a start failure's message.

    ``lazy``: when the disk cache already knows this model (its identity was stored when it last ran
    here), start the backend only on the first request the cache cannot answer, so a fully cached job
    never loads the model."""
    key = engine_key(settings)
    path = Path(key[1].model or "served-model")  # openai: a served name (or the server's first), used in log lines
    cache_file = None if cache_path is False else Path(cache_path or default_cache_path()).resolve()
    if key not in _LOADED:
        start = lambda: _start_backend(settings, path, role)  # noqa: E731
        identity = None
        if lazy and cache_file is not None and settings.backend != "openai":
            cache = _cache_for(key, cache_file)
            identity = cache.get_identity(_identity_key(key, path)) if cache else None
        if identity is None:
            _LOADED[key] = start()
        else:
            _LOADED[key] = LazyBackend(start, identity, settings.resolved())
    if (key, cache_file) not in _CACHED:
        _CACHED[(key, cache_file)] = CachedEngine(_LOADED[key], _cache_for(key, cache_file))
    cached = _CACHED[(key, cache_file)]
    if cached.cache is not None and not isinstance(cached.inner, LazyBackend) and settings.backend != "openai":
        cached.cache.put_identity(
            _identity_key(key, path), {"model_id": cached.model_id, "max_model_len": cached.max_model_len}
        )
    return cached


_OPEN_CACHES: dict[tuple, ResultCache] = {}


def _cache_for(key: tuple, cache_file: Path | None) -> ResultCache | None:
    """The result cache a (backend, file) pair uses; opened once, closed by ``shutdown_engines``."""
    if cache_file is None:
        return None
    if (key, cache_file) in _CACHED:
        return _CACHED[(key, cache_file)].cache
    if (key, cache_file) not in _OPEN_CACHES:
        _OPEN_CACHES[(key, cache_file)] = ResultCache(cache_file)
    return _OPEN_CACHES[(key, cache_file)]


def _identity_key(key: tuple, path: Path) -> list:
    """What decides a backend's model_id and context length: backend, settings, the model folder's content."""
    from apo_local.engine.modelinfo import model_fingerprint

    return [key[0], repr(key[1]), model_fingerprint(path)]


def _start_backend(settings: EngineSettings, path: Path, role: str | None = None):
    global _STARTS
    log.info("loading model %s (%s) ...", path.name, settings.backend)
    started = time.perf_counter()
    _STARTS += 1
    if settings.backend != "openai" and settings.base_url:
        raise ApoError(f"{role or 'target'}.base_url: only for backend openai (now {settings.backend})")
    if settings.backend == "openai":
        from apo_local.engine.openai_engine import OpenAIEngine

        backend = OpenAIEngine(settings, role)
    elif settings.backend == "vllm":
        from apo_local.engine.vllm_engine import VLLMEngine

        backend = VLLMEngine(path, settings, role)
    elif settings.backend == "transformers":
        from apo_local.engine.hf_engine import TransformersEngine

        if settings.engine_args:
            raise ApoError(
                f"{role or 'target'}.engine_args: vLLM engine arguments; the transformers backend takes none"
            )
        backend = TransformersEngine(path, settings)
    else:
        raise ApoError(f"unknown engine backend {settings.backend!r} (use vllm, transformers or openai)")
    backend.load_seconds = time.perf_counter() - started
    log.info("model %s loaded in %.1f s", path.name, backend.load_seconds)
    return backend


class LazyBackend:
    """A backend not started yet: its identity (model id, context length) comes from the disk cache; the
    first request that reaches it starts the real one."""

    def __init__(self, start, identity: dict, settings: EngineSettings):
        self._start, self.real = start, None
        self.model_id, self.max_model_len = identity["model_id"], identity["max_model_len"]
        self.settings = settings
        self.load_seconds = 0.0

    def _backend(self):
        if self.real is None:
            self.real = self._start()
            self.load_seconds = self.real.load_seconds
            if (self.real.model_id, self.real.max_model_len) != (self.model_id, self.max_model_len):
                raise ApoError(f"model {self.model_id} changed identity since it was cached; run again")
        return self.real

    def count_tokens(self, prompts):
        return self._backend().count_tokens(prompts)

    def generate(self, requests):
        return self._backend().generate(requests)

    def score_choices(self, prompts, choices):
        return self._backend().score_choices(prompts, choices)

    def close(self) -> None:
        if self.real is not None and hasattr(self.real, "close"):
            self.real.close()


def load_role_engines(
    target: EngineSettings,
    optimizer: EngineSettings,
    cache_path: Path | str | None | bool = None,
) -> tuple[CachedEngine, CachedEngine, dict]:
    """The target's and the optimizer's engines: one shared engine when they are the same model and
    settings; otherwise two, placed on their own GPUs or splitting the GPU memory (engine/placement.py).
    Returns the two engines and the placement plan with the models (what a run writes as ``engines.json``)."""
    from apo_local.engine.placement import gpu_memory_gib, plan_engines
    from apo_local.engine.settings import cuda_devices

    kt, ko = engine_key(target), engine_key(optimizer)
    shared = kt == ko
    gpus = cuda_devices() if has_cuda_gpu() else 0
    vllm_pair = target.backend == optimizer.backend == "vllm"
    paths = (Path(kt[1].model), Path(ko[1].model)) if vllm_pair else None  # a server's model is no folder here
    plan = plan_engines(
        target, optimizer, shared or not vllm_pair, gpus, paths, gpu_memory_gib() if gpus and not shared else None
    )
    first = load_engine(plan.target, cache_path, role="target")
    second = load_engine(plan.optimizer, cache_path, role="optimizer")
    import json

    return first, second, {**json.loads(plan.to_json()), "models": role_models(target, optimizer)}


def model_of(settings: EngineSettings) -> dict:
    """Which model an engine's settings mean (``models.model_record``: name as given, alias, folder, weights
    fingerprint); a server's model is the name it serves, with the backend and URL."""
    if settings.backend == "openai":
        return {"name": settings.model, "backend": "openai", "base_url": settings.base_url}
    from apo_local.models.registry import model_record

    return {**model_record(settings.model), "backend": settings.backend}


def role_models(target: EngineSettings, optimizer: EngineSettings) -> dict:
    """``{"target": model_of(target), "optimizer": model_of(optimizer)}``: what a run records of its models."""
    return {"target": model_of(target), "optimizer": model_of(optimizer)}


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


def running_engines() -> frozenset[tuple]:
    """The ``engine_key`` of every backend this process has running."""
    return frozenset(_LOADED)


def shutdown_engines(only: CachedEngine | None = None, *, keys=None) -> None:
    """Stop the backends this process started (all, just ``only``'s, or those of the ``engine_key``s in ``keys``),
    engine worker processes included."""
    if only is not None:
        backends = [only.inner]
    elif keys is not None:
        backends = [_LOADED[k] for k in keys if k in _LOADED]
    else:
        backends = list(_LOADED.values())
    for k, cached in list(_CACHED.items()):
        if cached.inner in backends:
            if cached.cache:
                cached.cache.close()
            _OPEN_CACHES.pop(k, None)
            del _CACHED[k]
    for k, backend in list(_LOADED.items()):
        if backend in backends:
            close = getattr(backend, "close", None)
            if close:
                close()
            del _LOADED[k]
