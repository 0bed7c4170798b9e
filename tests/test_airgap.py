"""Air-gap and privacy, proven on a complete run of the real tool.

One subprocess runs a tiny ``apo-local optimize`` with:

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
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]

GUARD = textwrap.dedent(
    '''
    """Test-only socket guard: record every network attempt, refuse all but loopback / unix."""
    import ipaddress, json, os, socket

    _LOG = os.environ.get("APO_NETGUARD_LOG")
    _real_connect, _real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    _real_sendto, _real_getaddrinfo = socket.socket.sendto, socket.getaddrinfo
    _real_gethostbyname = socket.gethostbyname

    def _record(kind, target, allowed):
        if _LOG:
            with open(_LOG, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "kind": kind, "target": repr(target), "allowed": allowed}) + "\\n")

    def _loopback_host(host):
        if host in (None, "", "localhost", "localhost.localdomain", b"localhost"):
            return True
        try:
            return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host).is_loopback
        except ValueError:
            return False

    def _allowed(sock, address):
        if sock.family == getattr(socket, "AF_UNIX", None):
            return True
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            return _loopback_host(address[0])
        return False

    def _refuse(kind, target):
        _record(kind, target, False)
        raise OSError(101, f"network blocked by test guard: {target!r}")

    def connect(self, address):
        if not _allowed(self, address):
            _refuse("connect", address)
        _record("connect", address, True)
        return _real_connect(self, address)

    def connect_ex(self, address):
        if not _allowed(self, address):
            _record("connect_ex", address, False)
            return 101
        _record("connect_ex", address, True)
        return _real_connect_ex(self, address)

    def sendto(self, data, *args):
        address = args[-1]
        if not _allowed(self, address):
            _refuse("sendto", address)
        return _real_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if not _loopback_host(host):
            _record("getaddrinfo", host, False)
            raise socket.gaierror(socket.EAI_NONAME, f"name resolution blocked by test guard: {host!r}")
        return _real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host):
        if not _loopback_host(host):
            _record("gethostbyname", host, False)
            raise socket.gaierror(socket.EAI_NONAME, f"name resolution blocked by test guard: {host!r}")
        return _real_gethostbyname(host)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
    socket.getaddrinfo, socket.gethostbyname = getaddrinfo, gethostbyname
    _record("installed", None, True)
    '''
)


def guarded_env(tmp_path: Path, **extra: str) -> tuple[dict, Path]:
    """Environment for a child that loads the socket guard (and passes it on to its own children)."""
    guard_dir = tmp_path / "netguard"
    guard_dir.mkdir(exist_ok=True)
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "netguard.jsonl"
    path = os.pathsep.join(p for p in (str(guard_dir), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "APO_NETGUARD_LOG": str(log), **extra}, log


def read_guard_log(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


def _netns_prefix() -> list[str]:
    """Run inside a new network namespace with only loopback up, where the machine allows it."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return []
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return []
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


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
    assert json.loads(proc.stdout) == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                       "HF_HUB_DISABLE_TELEMETRY": "1", "VLLM_NO_USAGE_STATS": "1",
                                       "VLLM_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "VLLM_HOST_IP": "127.0.0.1"}


TRACE_CALL_KEYS = {"role", "op", "phase", "round", "prompts", "input_tokens", "output_tokens", "cache_hits", "seconds",
                   "errors"}
TRACE_EVENT_KEYS = {"event", "phase", "round", "purpose", "reason", "reply", "text", "error", "detail", "example",
                    "tokens_before", "tokens_after", "parent", "candidate", "count", "max_tokens", "kept", "rule"}


@pytest.mark.engine
def test_complete_run_air_gapped_private_and_secret_free(tmp_path):
    secrets = {"APO_TEST_SECRET": "sk-apotest-3f9c1e0b7a5d4c2e", "HF_TOKEN": "hf_apotestFAKEtoken9081726354",
               "OPENAI_API_KEY": "sk-proj-apotest-00112233445566"}
    env, log = guarded_env(tmp_path, APO_LOCAL_CACHE_DIR=str(tmp_path / "cache"), **secrets)
    for key in ("VLLM_HOST_IP", "VLLM_LOOPBACK_IP"):  # the tool must set these itself
        env.pop(key, None)
    cfg = {**TINY, "search": {**TINY["search"], "rounds": 1}, "evaluation": {"test_limit": 8}}
    cfg.pop("cache", None)  # the default cache location, under APO_LOCAL_CACHE_DIR
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    netns = _netns_prefix()
    proc = subprocess.run([*netns, sys.executable, "-m", "apo_local.cli", "optimize", "--config", str(tmp_path / "tiny.yaml"),
                           "--out", str(run)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((run / "results.json").read_text())["rounds_completed"] == 1

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
    files = [p for root in (run, tmp_path / "cache") for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "engine-cache.sqlite" for p in files)
    for p in files:
        data = p.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in data, f"{name} leaked into {p}"

    # 4. user-only permissions, with a permissive umask in effect
    for root in (run, tmp_path / "cache"):
        assert root.stat().st_mode & 0o777 == 0o700, root
        for p in root.rglob("*"):
            mode = p.stat().st_mode & 0o777
            assert mode == (0o700 if p.is_dir() else 0o600), f"{p}: {oct(mode)}"
