"""The test-only socket guard and network namespace of the air-gap checks (tests/project/test_airgap.py), and the one
air-gapped CLI run the session shares (tests/conftest.py ``airgapped_cli_run``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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


def netns_prefix() -> list[str]:
    """Run inside a new network namespace with only loopback up, where the machine allows it."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return []
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return []
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
