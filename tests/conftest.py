"""Shared fixtures. End-to-end tests share ONE real vLLM engine (embedded SmolLM2-135M) per session."""

from __future__ import annotations

import os

import pytest


def _share_the_cores_between_workers() -> None:
    """The suite runs on pytest-xdist workers (pyproject addopts): each worker's engines get their own cores (vLLM's
    CPU thread binding, OpenMP threads), so two workers on a 2-core machine never fight over one core. Set before
    torch or vLLM is imported; a user's own settings win."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2:
        return
    cores = sorted(os.sched_getaffinity(0))
    per_worker = max(1, len(cores) // count)
    start = (int(worker.removeprefix("gw")) * per_worker) % len(cores)
    mine = cores[start : start + per_worker]
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, mine)))
    os.environ.setdefault("OMP_NUM_THREADS", str(len(mine)))


_share_the_cores_between_workers()
# The tests' CPU engines (in-process, CLI subprocesses, Ray workers) hold 1 GiB of KV cache, not the default 2: it
# holds every batch the tests send, and keeps two workers' engines inside a 24 GiB machine. A user's setting wins.
os.environ.setdefault("APO_LOCAL_CPU_KV_CACHE_GB", "1")

# No test writes outside its temporary folders: the user-level result cache and this machine's throughput record
# (~/.cache/apo-local by default) go to one temporary folder per test process. Tests that need a cache of their
# own name one.
import tempfile  # noqa: E402

os.environ["APO_LOCAL_CACHE_DIR"] = tempfile.mkdtemp(prefix="apo-local-test-cache-")

import apo_local  # noqa: E402,F401  (offline environment first)

try:  # property tests: no per-example deadline (a loaded 2-core machine makes timings meaningless)
    from hypothesis import HealthCheck, settings

    # derandomized: the same examples on every run and machine (a CI failure reproduces; no flaky health checks)
    settings.register_profile(
        "apo-local",
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )
    settings.load_profile("apo-local")
except ImportError:  # pragma: no cover
    pass

TINY = {
    "task": "liar",
    "seed": 0,
    "train_limit": 200,
    "search": {"rounds": 2, "beam_size": 2, "minibatch_size": 8, "max_expansion": 2},
    "protegi": {"n_gradients": 2, "errors_per_gradient": 2, "mc_samples": 1},
    "selection": {"selector": "ucb", "budget": 32, "batch_size": 8, "arms_per_round": 2},
    "optimizer": {"max_tokens": 96},
    "evaluation": {"test_limit": 12, "validation_rows": 8},
}


@pytest.fixture(scope="session")
def engine_settings():
    from apo_local.engine import EngineSettings

    return EngineSettings()


@pytest.fixture(scope="session")
def engine(engine_settings, tmp_path_factory):
    """The real engine, started once; its own result cache file."""
    from apo_local.engine import load_engine, shutdown_engines

    yield load_engine(engine_settings, tmp_path_factory.mktemp("cache") / "engine.sqlite")
    shutdown_engines()


@pytest.fixture(autouse=True)
def _stop_the_engines_a_test_started():
    """An engine a test starts in its body or its own fixtures (not the session's default one, not a wider
    fixture's) stops when the test ends: a worker keeps only the engines later tests share."""
    from apo_local.engine import EngineSettings, engine_key, running_engines, shutdown_engines

    before = running_engines()
    yield
    started = running_engines() - before
    if started:
        shutdown_engines(keys=started - {engine_key(EngineSettings())})


@pytest.fixture(scope="session")
def tiny_run(engine, tmp_path_factory):
    """One uninterrupted TINY run, in-process on the shared engine with a fresh result cache (every engine
    call computed): the reference that resumed and checked runs are compared with. (run directory, result)"""
    from apo_local.run.config import build_config
    from apo_local.run.optimize import optimize

    root = tmp_path_factory.mktemp("tiny-run")
    result = optimize(build_config(TINY, {"cache": str(root / "cache.sqlite")}), root / "run")
    return root / "run", result


@pytest.fixture(scope="session")
def shipped_run(engine, tmp_path_factory):
    """``shipped_run(name)``: the run directory of a shipped config at its tiny size (tests/helpers/shipped_runs.py), run
    once per session with a result cache of its own (independent of the other configs and of test order)."""
    from apo_local.run.config import build_config
    from apo_local.run.optimize import optimize
    from tests.helpers.shipped_runs import tiny

    runs: dict = {}

    def run(name: str):
        if name not in runs:
            root = tmp_path_factory.mktemp(f"shipped-{name}")
            optimize(build_config(tiny(name), {"cache": str(root / "cache.sqlite")}), root / "run")
            runs[name] = root / "run"
        return runs[name]

    return run


@pytest.fixture(scope="session")
def lock_runs(tmp_path_factory):
    """Every shipped run config at the lock size (tests/helpers/shipped_runs.py), three rounds (baseline-no-iteration: its
    one), on the scripted engine (tests/helpers/stand_in.py) with candidate hygiene off, so candidates are admitted and
    beams change: ``{name: LockRun}`` for the search-logic golden and the per-config behaviour checks."""
    from tests.helpers.shipped_runs import RUN_CONFIGS, lock_run

    root = tmp_path_factory.mktemp("lock")
    with pytest.MonkeyPatch.context() as mp:
        return {name: lock_run(name, root / name, mp) for name in RUN_CONFIGS}


# The least work that still prints the whole table: one round, one beam prompt, one expansion.
CLI_RUN = {
    **TINY,
    "search": {**TINY["search"], "rounds": 1, "beam_size": 1, "max_expansion": 1},
    "optimizer": {"max_tokens": 48},
    "protegi": {**TINY["protegi"], "n_gradients": 1},
    "selection": {**TINY["selection"], "budget": 16},
    "evaluation": {**TINY["evaluation"], "test_limit": 8},
}
CLI_SECRETS = {
    "APO_TEST_SECRET": "sk-apotest-3f9c1e0b7a5d4c2e",
    "HF_TOKEN": "hf_apotestFAKEtoken9081726354",
    "OPENAI_API_KEY": "sk-proj-apotest-00112233445566",
}


@pytest.fixture(scope="session")
def airgapped_cli_run(tmp_path_factory):
    """One ``apo-local optimize`` subprocess (its own engine) for the session, run as a user would and as the air-gap
    checks need: a socket guard in every process, a network namespace with loopback only where the machine allows
    it, fake secrets in the environment, a permissive umask, the default cache location under APO_LOCAL_CACHE_DIR,
    no PYTHONWARNINGS. tests/project/test_airgap.py reads what it left; tests/commands/test_cli_output_e2e.py reads what it printed.
    ``.proc`` (stdout/stderr text), ``.run``, ``.cache``, ``.guard_log``, ``.env``."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    import yaml

    from tests.helpers.airgap_guard import guarded_env, netns_prefix

    root = tmp_path_factory.mktemp("cli-run")
    env, log = guarded_env(root, APO_LOCAL_CACHE_DIR=str(root / "cache"), **CLI_SECRETS)
    for key in ("VLLM_HOST_IP", "VLLM_LOOPBACK_IP", "PYTHONWARNINGS"):  # the tool must set the first two itself
        env.pop(key, None)
    (root / "tiny.yaml").write_text(yaml.safe_dump(CLI_RUN))
    run = root / "run"
    proc = subprocess.run(
        [
            *netns_prefix(),
            sys.executable,
            "-m",
            "apo_local.commands.cli",
            "optimize",
            "--config",
            str(root / "tiny.yaml"),
            "--out",
            str(run),
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=lambda: os.umask(0o022),
    )
    return SimpleNamespace(proc=proc, run=run, cache=root / "cache", guard_log=log, env=env)


SERVED = "smollm2"  # the server's first model name (the model folder is its second)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """One vLLM OpenAI-compatible server for the session (the benchmarks' ``LocalServer``, scripts/http_engine.py:
    ``python -m vllm.entrypoints.openai.api_server`` on a free loopback port, the in-process engine's weights, dtype,
    block size and chat template), shared by the openai backend's and the benchmark client's tests. ``.url`` ends in
    /v1; ``.base_url`` does not; ``.model_path`` is the folder (a served name too)."""
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from apo_local.engine import EngineSettings
    from apo_local.models.registry import chat_template_for, resolve_model
    from apo_local.support.errors import ApoError

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from http_engine import LocalServer

    folder = resolve_model(None)
    extra = [
        "--served-model-name",
        SERVED,
        str(folder),
        "--dtype",
        EngineSettings().resolved().dtype,
        "--block-size",
        "32",
        "--disable-log-stats",
    ]
    template = chat_template_for(folder)
    if template:
        path = tmp_path_factory.mktemp("server") / "template.jinja"
        path.write_text(template, encoding="utf-8")
        extra += ["--chat-template", str(path)]
    log = tmp_path_factory.mktemp("server-log") / "server.log"
    server = LocalServer(folder, kv_cache_bytes=1 << 30, extra_args=extra, log_path=log, startup_timeout=300)
    try:
        server.start()
    except ApoError as e:
        pytest.fail(f"server did not start ({e}): " + log.read_text(errors="replace")[-2000:])
    yield SimpleNamespace(url=server.base_url + "/v1", base_url=server.base_url, model_path=str(folder))
    server.stop()


@pytest.fixture(scope="session")
def liar():
    from apo_local.tasks import load_task

    return load_task("liar")


# ---- pytest-xdist: which tests must share a worker --------------------------------------------------------------
# A session fixture is built once per worker, so the modules that use one of these form one group that a single
# worker runs (a module is never split: its module fixtures stay built once too). Heavier groups are handed out first.
SHARED_SESSION_FIXTURES = ("tiny_run", "shipped_run", "airgapped_cli_run", "vllm_server", "lock_runs")


def module_groups() -> dict[str, str]:
    """Each test module, as its path relative to tests/ (``run/test_optimize_e2e.py``) -> its group: modules that
    name the same shared session fixture join one group."""
    import re
    from pathlib import Path

    here = Path(__file__).parent
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    # in file-name order (then path): the order the groups were joined in when tests/ was flat
    modules = sorted(here.rglob("test_*.py"), key=lambda p: (p.name, p.relative_to(here).as_posix()))
    for path in modules:
        key = path.relative_to(here).as_posix()
        text = path.read_text(encoding="utf-8")
        for fixture in SHARED_SESSION_FIXTURES:
            if re.search(rf"\b{fixture}\b", text):
                parent[find(key)] = find(fixture)
    return {key: find(key) for key in (path.relative_to(here).as_posix() for path in modules)}


def _module_of(nodeid: str) -> str:
    """A node id's module as a key of ``module_groups``: ``tests/run/test_x.py::test_y[a/b]`` -> ``run/test_x.py``
    (node ids are relative to the rootdir; the path after this folder's name is the key)."""
    from pathlib import Path

    parts = nodeid.split("::", 1)[0].split("/")
    tests = Path(__file__).parent.name
    return "/".join(parts[len(parts) - parts[::-1].index(tests) :] if tests in parts else parts)


def pytest_xdist_make_scheduler(config, log):
    """Work units are the groups of ``module_groups`` (in the order the workers collected them)."""
    from xdist.scheduler import LoadScopeScheduling

    groups = module_groups()

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = _module_of(nodeid)
            return groups.get(module, module)

    return SharedFixtureScheduling(config, log)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most as many as memory allows (9 GiB each: two workers peaked at 17.8 GB,
    their engines and the processes their tests start), at most 4."""
    import psutil

    cores = len(os.sched_getaffinity(0))
    return max(1, min(cores, int(psutil.virtual_memory().total / (9 << 30)), 4))


def pytest_collection_modifyitems(config, items):
    """On xdist workers: heavier groups first (their collection order is the order work is handed out)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    groups = module_groups()
    weight: dict[str, float] = {}
    for item in items:
        group = groups.get(_module_of(item.nodeid), "")
        weight[group] = weight.get(group, 0) + (
            10 if item.get_closest_marker("slow") else 3 if item.get_closest_marker("engine") else 0.1
        )
    items.sort(key=lambda item: -weight[groups.get(_module_of(item.nodeid), "")])  # stable: module order kept
