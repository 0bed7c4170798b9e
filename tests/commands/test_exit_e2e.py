"""Every command exits promptly with its exit code: after an engine start failure, and after the *second*
engine's start failure while the first one runs (where a CUDA run hung). After success: the CLI optimize and
evaluate subprocesses of tests/commands/test_cli_output_e2e.py end with 0 within their timeouts.

Process tests with a deadline, on the real vLLM CPU engine (each command is its own process).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.engine


RUN_TAG = "APO_TEST_EXIT_RUN"  # marks the processes of one command (other tests may run engines beside it)


def run(args: list[str], deadline: float, tag: str = "", **env) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "apo_local.commands.cli", *args],
        capture_output=True,
        text=True,
        timeout=deadline,
        env={**os.environ, **env, RUN_TAG: tag},
    )
    return proc, time.monotonic() - start


def engine_processes(tag: str) -> set[int]:
    """The engine processes started by the command run with ``tag`` (they inherit its environment)."""
    import psutil

    found = set()
    for p in psutil.process_iter(["name"]):
        if not (p.info["name"] or "").startswith("VLLM::"):
            continue
        try:
            if p.environ().get(RUN_TAG) == tag:
                found.add(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def test_engine_start_failure_exits_with_2_and_one_line(tmp_path):
    proc, _ = run(
        [
            "optimize",
            "--task",
            "liar",
            "--out",
            str(tmp_path / "run"),
            "--cache",
            "off",
            "--target-engine-args",
            "{no_such_engine_arg: 1}",
        ],
        deadline=180,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: engine failed to start") and "no_such_engine_arg" in lines[-1]
    assert "target.engine_args" in lines[-1] and "Traceback" not in proc.stderr
    assert {p.name for p in (tmp_path / "run").iterdir()} <= {".lock"}  # no half run left


@pytest.mark.slow
def test_second_engine_failure_beside_a_running_engine_exits(tmp_path):
    """The target's engine (its engine core in its own process, as on a GPU) is up when the
    optimizer's fails: the command still ends at once, and leaves no engine process behind."""
    tag = uuid.uuid4().hex
    proc, seconds = run(
        [
            "optimize",
            "--task",
            "liar",
            "--out",
            str(tmp_path / "run"),
            "--cache",
            "off",
            "--optimizer-model",
            "smollm2-135m",
            "--optimizer-max-model-len",
            "1024",
            "--optimizer-engine-args",
            "{no_such_engine_arg: 1}",
        ],
        deadline=300,
        tag=tag,
        APO_LOCAL_CPU_ENGINE="subprocess",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "optimizer.engine_args" in last and "target.engine_args" not in last
    for _ in range(20):
        if not engine_processes(tag):
            break
        time.sleep(0.5)
    assert not engine_processes(tag), "engine processes outlived the command"
