"""An offline install bundle for an air-gapped machine, built on a connected one.

The target machine has Python, a platform, CUDA and a torch already installed, and no network.
``build_bundle`` picks the newest vLLM whose wheel pins that torch (read from the wheels' metadata
with pip, no wheel downloaded for it), downloads the wheels of that vLLM, apo-local and their
dependencies for the target (``pip download --only-binary=:all: --platform ... --python-version
...``), leaves out what the target already has (torch and the packages that come with it), and
writes ``install.sh``: ``pip install --no-index --no-deps`` of every wheel in the folder.

Verified pins (``pip install --dry-run --report`` of each vLLM wheel's metadata):

| vLLM | torch |
|---|---|
| 0.26.0 | 2.11.0 |
| 0.27.0 - 0.32.0 | 2.13.0 |
| 0.33.0 | 2.14.0 |
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from apo_local.support.errors import ApoError

# Supported vLLM releases (the engine's APIs were checked against this range) and their torch pins.
VERIFIED_PINS = {
    "0.26.0": "2.11.0",
    "0.27.0": "2.13.0",
    "0.28.0": "2.13.0",
    "0.29.0": "2.13.0",
    "0.30.0": "2.13.0",
    "0.31.0": "2.13.0",
    "0.32.0": "2.13.0",
    "0.33.0": "2.14.0",
}
# Installed with torch on the target, or tied to its CUDA build: never bundled.
TORCH_FAMILY = re.compile(r"^(torch|torchvision|torchaudio|torchcodec|triton|nvidia-.*|cuda-.*)$")


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+]", v))


def torch_pin(requires_dist: list[str]) -> str | None:
    """The exact torch version a wheel's Requires-Dist pins (``torch==X``), or None."""
    for req in requires_dist:
        m = re.match(r"^torch\s*==\s*([0-9][0-9a-z.+]*)\s*(;.*)?$", req.strip())
        if m and (m.group(2) is None or "extra" not in m.group(2)):
            return m.group(1)
    return None


def pick_vllm(torch_version: str, pins: dict[str, str]) -> str:
    """The newest vLLM (of ``pins``: version -> pinned torch) pinning ``torch_version`` (local
    labels such as ``+cu130`` ignored)."""
    want = torch_version.split("+")[0]
    matching = [v for v, t in pins.items() if t and t.split("+")[0] == want]
    if not matching:
        known = ", ".join(f"{t} (vLLM {v})" for v, t in sorted(pins.items(), key=lambda kv: _version_key(kv[0])))
        raise ApoError(f"no supported vLLM pins torch {torch_version}; known pins: {known}")
    return max(matching, key=_version_key)


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ApoError(f"pip {args[0]} failed: {last}")


def platform_tags(platform: str) -> list[str]:
    """The wheel platform tags a ``manylinux_2_X_arch`` machine installs (pip takes ``--platform``
    literally): every glibc from 2.X down to 2.17, and the legacy ``manylinux2014`` alias."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if not m:
        return [platform]
    top, arch = int(m.group(1)), m.group(2)
    tags = [f"manylinux_2_{v}_{arch}" for v in range(top, 16, -1)]
    return tags + ([f"manylinux2014_{arch}"] if top >= 17 else [])


def _target_flags(python: str, platform: str) -> list[str]:
    abi = "cp" + python.replace(".", "")
    plats = [a for tag in platform_tags(platform) for a in ("--platform", tag)]
    return [
        "--only-binary=:all:",
        *plats,
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]


def read_pins(versions: list[str], python: str, platform: str, package: str = "vllm") -> dict[str, str]:
    """vLLM version -> the torch its wheel pins, from the wheels' metadata (pip reads only the metadata)."""
    pins = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in versions:
            report = Path(tmp) / f"{v}.json"
            try:
                _pip(
                    "install",
                    "--dry-run",
                    "--quiet",
                    "--no-deps",
                    "--ignore-installed",
                    "--report",
                    str(report),
                    "--target",
                    str(Path(tmp) / "t"),
                    *_target_flags(python, platform),
                    f"{package}=={v}",
                )
            except ApoError:
                continue
            meta = json.loads(report.read_text())["install"][0]["metadata"]
            pins[v] = torch_pin(meta.get("requires_dist", []))
    return pins


def resolve(requirements: list[str], python: str, platform: str, find_links: list[Path]) -> list[tuple[str, str]]:
    """(name, version) of everything ``requirements`` needs on the target, resolved by pip."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        links = [a for d in find_links for a in ("--find-links", str(d))]
        _pip(
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--report",
            str(report),
            "--target",
            str(Path(tmp) / "t"),
            *_target_flags(python, platform),
            *links,
            *requirements,
        )
        return [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.loads(report.read_text())["install"]]


def install_script(wheels: list[str], python: str) -> str:
    listed = "\n".join(f'  "$HERE/wheels/{w}" \\' for w in wheels)
    return f"""#!/usr/bin/env bash
# Offline install of apo-local and vLLM (no network): run on the target machine, in the Python
# environment that already has torch (python {python}). Every wheel of this folder is installed
# without resolving dependencies; torch and its CUDA packages are the ones already installed.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${{PYTHON:-python3}}"
"$PYTHON" -m pip install --no-index --no-deps --find-links "$HERE/wheels" \\
{listed}
  ;
"$PYTHON" -c "import apo_local; print('apo-local installed')"
"""


def build_bundle(
    out: Path,
    python: str,
    platform: str,
    torch_version: str,
    vllm: str | None = None,
    vllm_package: str = "vllm",
    project: Path | None = None,
    pins: dict[str, str] | None = None,
    extra: list[str] | None = None,
) -> dict:
    """Write ``out/wheels/*.whl``, ``out/install.sh`` and ``out/bundle.json``; returns the manifest.
    ``vllm``: a version, None (the newest pinning ``torch_version``) or "none" (apo-local alone)."""
    out = Path(out)
    project = project or Path(__file__).resolve().parents[2]
    if vllm is None:
        pins = pins if pins is not None else read_pins(list(VERIFIED_PINS), python, platform, vllm_package)
        vllm = pick_vllm(torch_version, pins)
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(project))
    own = sorted(wheels.glob("apo_local-*.whl"))[-1]
    reqs = [str(own)] + ([] if vllm == "none" else [f"{vllm_package}=={vllm}"]) + list(extra or [])
    needed = [
        (n, v)
        for n, v in resolve(
            reqs + [f"torch=={torch_version.split('+')[0]}"] if vllm != "none" else reqs, python, platform, [wheels]
        )
        if not TORCH_FAMILY.match(n.lower()) and n.lower().replace("_", "-") != "apo-local"
    ]
    if needed:
        _pip(
            "download",
            "--quiet",
            "--no-deps",
            "-d",
            str(wheels),
            *_target_flags(python, platform),
            *[f"{n}=={v}" for n, v in needed],
        )
    names = sorted(p.name for p in wheels.glob("*.whl"))
    (out / "install.sh").write_text(install_script(names, python))
    (out / "install.sh").chmod(0o755)
    manifest = {
        "python": python,
        "platform": platform,
        "torch": torch_version,
        "vllm": vllm,
        "vllm_package": vllm_package,
        "wheels": names,
        "bytes": sum(p.stat().st_size for p in wheels.glob("*.whl")),
    }
    (out / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
