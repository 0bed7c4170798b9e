"""Shared fixtures. End-to-end tests share ONE real vLLM engine (embedded SmolLM2-135M) per session."""

from __future__ import annotations

import pytest

import apo_local  # noqa: F401  (offline environment first)

try:  # property tests: no per-example deadline (a loaded 2-core machine makes timings meaningless)
    from hypothesis import settings

    settings.register_profile("apo-local", deadline=None)
    settings.load_profile("apo-local")
except ImportError:  # pragma: no cover
    pass

TINY = {
    "task": "liar",
    "seed": 0,
    "train_limit": 200,
    "search": {"rounds": 2, "beam_size": 2, "minibatch_size": 8, "max_expansion": 2},
    "protegi": {"n_gradients": 2, "errors_per_gradient": 2, "mc_samples": 1},
    "selection": {"selector": "ucb", "budget": 48, "batch_size": 8, "arms_per_round": 2},
    "optimizer": {"max_tokens": 96},
    "evaluation": {"test_limit": 24, "validation_rows": 16},
}


@pytest.fixture(scope="session")
def engine_settings():
    from apo_local.engine import EngineSettings

    return EngineSettings()


@pytest.fixture(scope="session")
def engine(engine_settings, tmp_path_factory):
    """The real engine, started once; its own result cache file."""
    from apo_local.engine import load_engine

    from apo_local.engine import shutdown_engines

    yield load_engine(engine_settings, tmp_path_factory.mktemp("cache") / "engine.sqlite")
    shutdown_engines()


@pytest.fixture(scope="session")
def tiny_run(engine, tmp_path_factory):
    """One uninterrupted TINY run, in-process on the shared engine with a fresh result cache (every engine
    call computed): the reference that resumed and checked runs are compared with. (run directory, result)"""
    from apo_local.config import build_config
    from apo_local.runner import optimize

    root = tmp_path_factory.mktemp("tiny-run")
    result = optimize(build_config(TINY, {"cache": str(root / "cache.sqlite")}), root / "run")
    return root / "run", result


@pytest.fixture(scope="session")
def shipped_run(engine, tmp_path_factory):
    """``shipped_run(name)``: the run directory of a shipped config at its tiny size (tests/shipped_runs.py), run
    once per session with a result cache of its own (independent of the other configs and of test order)."""
    from apo_local.config import build_config
    from apo_local.runner import optimize
    from tests.shipped_runs import tiny

    runs: dict = {}

    def run(name: str):
        if name not in runs:
            root = tmp_path_factory.mktemp(f"shipped-{name}")
            optimize(build_config(tiny(name), {"cache": str(root / "cache.sqlite")}), root / "run")
            runs[name] = root / "run"
        return runs[name]

    return run


@pytest.fixture(scope="session")
def liar():
    from apo_local.tasks import load_task

    return load_task("liar")
