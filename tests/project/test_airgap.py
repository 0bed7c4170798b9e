"""Air-gap and privacy, proven on a complete run of the real tool.

One subprocess (the session's ``airgapped_cli_run``, tests/conftest.py) runs a tiny ``apo-local optimize`` with:

* a socket guard (``sitecustomize.py`` on PYTHONPATH, so vLLM's engine-core and worker processes
  load it too) that records every connect / DNS lookup and refuses anything but loopback and
  unix sockets;
* where possible (root, ``unshare`` and ``ip`` present), inside a fresh network namespace holding
  only a loopback interface, so even code that bypasses Python's socket module cannot get out;
* fake secrets in its environment.

It must complete; the guard log must show no non-loopback attempt from any process; the secrets must
appear nowhere in the run directory or the cache; the trace holds only allowed keys; every file is
user-only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CLI_SECRETS
from tests.helpers.airgap_guard import guarded_env, netns_prefix, read_guard_log

ROOT = Path(__file__).resolve().parents[2]


def test_guard_refuses_and_records(tmp_path):
    env, log = guarded_env(tmp_path)
    code = (
        "import socket\n"
        "for target in [('10.255.255.1', 80), ('8.8.8.8', 53)]:\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    try:\n        s.connect(target); print('CONNECTED')\n    except OSError: pass\n"
        "try:\n    socket.create_connection(('example.com', 443), timeout=1); print('CONNECTED')\nexcept OSError: pass\n"
        "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)\n"
        "socket.create_connection(srv.getsockname(), timeout=5).close(); print('LOOPBACK OK')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.split() == ["LOOPBACK", "OK"], proc.stderr
    refused = [r for r in read_guard_log(log) if not r["allowed"]]
    assert [r["kind"] for r in refused] == ["connect", "connect", "getaddrinfo"]


def test_offline_environment_is_set_before_vllm_and_hf_import():
    code = (
        "import sys, os\nimport apo_local\n"
        "assert not any(m.split('.')[0] in ('vllm', 'transformers', 'huggingface_hub', 'datasets', 'torch') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('vllm', 'transformers', 'torch'))\n"
        "import json; print(json.dumps({k: os.environ.get(k) for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', "
        "'HF_DATASETS_OFFLINE', 'HF_HUB_DISABLE_TELEMETRY', 'VLLM_NO_USAGE_STATS', 'VLLM_DO_NOT_TRACK', 'DO_NOT_TRACK', "
        "'VLLM_HOST_IP')}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "VLLM_NO_USAGE_STATS": "0", "DO_NOT_TRACK": "0"}  # a shell that tries
    env.pop("VLLM_HOST_IP", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_HOST_IP": "127.0.0.1",
    }


TRACE_CALL_KEYS = {
    "role",
    "op",
    "phase",
    "round",
    "prompts",
    "input_tokens",
    "output_tokens",
    "cache_hits",
    "seconds",
    "errors",
}
TRACE_EVENT_KEYS = {
    "event",
    "phase",
    "round",
    "purpose",
    "reason",
    "reply",
    "text",
    "error",
    "detail",
    "example",
    "tokens_before",
    "tokens_after",
    "parent",
    "candidate",
    "count",
    "max_tokens",
    "kept",
    "rule",
}


@pytest.mark.engine
def test_complete_run_air_gapped_private_and_secret_free(airgapped_cli_run):
    proc, run, cache, log = (
        airgapped_cli_run.proc,
        airgapped_cli_run.run,
        airgapped_cli_run.cache,
        airgapped_cli_run.guard_log,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((run / "results.json").read_text())["rounds_completed"] == 1
    netns = netns_prefix()

    # 1. no process (CLI, engine core, workers) attempted anything but loopback / unix sockets
    records = read_guard_log(log)
    pids = {r["pid"] for r in records if r["kind"] == "installed"}
    assert len(pids) >= 2, f"the guard must be active in vLLM's child processes too: {records[:5]}"
    blocked = [r for r in records if not r["allowed"]]
    assert blocked == [], f"non-loopback network attempts (netns={bool(netns)}): {blocked}"

    # 2. the trace: prompts, outputs and counts only, from an allowed set of keys
    lines = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    assert lines
    for line in lines:
        allowed = TRACE_EVENT_KEYS if "event" in line else TRACE_CALL_KEYS
        assert set(line) <= allowed, sorted(set(line) - allowed)

    # 3. no secret from the environment anywhere in the run directory or the cache
    files = [p for root in (run, cache) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "engine-cache.sqlite" for p in files)
    for p in files:
        data = p.read_bytes()
        for name, value in CLI_SECRETS.items():
            assert value.encode() not in data, f"{name} leaked into {p}"

    # 4. user-only permissions, with a permissive umask in effect
    for root in (run, cache):
        assert root.stat().st_mode & 0o777 == 0o700, root
        for p in root.rglob("*"):
            mode = p.stat().st_mode & 0o777
            assert mode == (0o700 if p.is_dir() else 0o600), f"{p}: {oct(mode)}"
