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


# The least work that still prints the whole table: one round, one beam prompt, one expansion.
CLI_RUN = {**TINY, "search": {**TINY["search"], "rounds": 1, "beam_size": 1, "max_expansion": 1},
           "optimizer": {"max_tokens": 48}, "protegi": {**TINY["protegi"], "n_gradients": 1},
           "selection": {**TINY["selection"], "budget": 16}, "evaluation": {**TINY["evaluation"], "test_limit": 8}}
CLI_SECRETS = {"APO_TEST_SECRET": "sk-apotest-3f9c1e0b7a5d4c2e", "HF_TOKEN": "hf_apotestFAKEtoken9081726354",
               "OPENAI_API_KEY": "sk-proj-apotest-00112233445566"}


@pytest.fixture(scope="session")
def airgapped_cli_run(tmp_path_factory):
    """One ``apo-local optimize`` subprocess (its own engine) for the session, run as a user would and as the air-gap
    checks need: a socket guard in every process, a network namespace with loopback only where the machine allows
    it, fake secrets in the environment, a permissive umask, the default cache location under APO_LOCAL_CACHE_DIR,
    no PYTHONWARNINGS. tests/test_airgap.py reads what it left; tests/test_cli_output_e2e.py reads what it printed.
    ``.proc`` (stdout/stderr text), ``.run``, ``.cache``, ``.guard_log``, ``.env``."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    import yaml

    from tests.airgap_guard import guarded_env, netns_prefix

    root = tmp_path_factory.mktemp("cli-run")
    env, log = guarded_env(root, APO_LOCAL_CACHE_DIR=str(root / "cache"), **CLI_SECRETS)
    for key in ("VLLM_HOST_IP", "VLLM_LOOPBACK_IP", "PYTHONWARNINGS"):  # the tool must set the first two itself
        env.pop(key, None)
    (root / "tiny.yaml").write_text(yaml.safe_dump(CLI_RUN))
    run = root / "run"
    proc = subprocess.run([*netns_prefix(), sys.executable, "-m", "apo_local.cli", "optimize", "--config",
                           str(root / "tiny.yaml"), "--out", str(run)], env=env, cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=900, preexec_fn=lambda: os.umask(0o022))
    return SimpleNamespace(proc=proc, run=run, cache=root / "cache", guard_log=log, env=env)


SERVED = "smollm2"  # the server's first model name (the model folder is its second)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """One vLLM OpenAI-compatible server for the session (``python -m vllm.entrypoints.openai.api_server`` on a free
    loopback port, the in-process engine's weights and dtype), shared by the openai backend's and the benchmark
    client's tests. ``.url`` ends in /v1; ``.base_url`` does not; ``.model_path`` is the folder (a served name too)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    from types import SimpleNamespace

    from apo_local.engine import EngineSettings
    from apo_local.engine.openai_engine import wait_until_ready
    from apo_local.engine.settings import cpu_engine_environment
    from apo_local.models import chat_template_for, resolve_model

    folder = resolve_model(None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
            "--served-model-name", SERVED, str(folder), "--host", "127.0.0.1", "--port", str(port),
            "--dtype", EngineSettings().resolved().dtype, "--max-model-len", "2048", "--enforce-eager",
            "--kv-cache-memory-bytes", str(1 << 30), "--block-size", "32", "--seed", "0",
            "--disable-log-stats", "--uvicorn-log-level", "warning"]
    template = chat_template_for(folder)
    if template:
        path = tmp_path_factory.mktemp("server") / "template.jinja"
        path.write_text(template, encoding="utf-8")
        args += ["--chat-template", str(path)]
    env = dict(os.environ)
    cpu_engine_environment(env)
    log = tmp_path_factory.mktemp("server-log") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base + "/v1", 300)
    except Exception:
        proc.kill()
        pytest.fail("server did not start: " + log.read_text(errors="replace")[-2000:])
    yield SimpleNamespace(url=base + "/v1", base_url=base, model_path=str(folder))
    os.killpg(proc.pid, signal.SIGTERM)  # the server and its engine process
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@pytest.fixture(scope="session")
def liar():
    from apo_local.tasks import load_task

    return load_task("liar")
