"""Engine settings and the hardware-dependent defaults that make an engine start."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from apo_local.support.errors import ApoError


def freeze(value: Any) -> Any:
    """A hashable copy of a JSON-like value (mappings become sorted item tuples, lists tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("__list__",) + tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of ``freeze``."""
    if isinstance(value, tuple):
        if value[:1] == ("__list__",):
            return [thaw(v) for v in value[1:]]
        return {k: thaw(v) for k, v in value}
    return value


@dataclass(frozen=True)
class EngineSettings:
    model: str | None = None  # registry alias or local folder; None = the registry default
    backend: str = "vllm"  # "vllm" (default), "transformers" (where vLLM can't be installed), "openai" (a server)
    dtype: str = "auto"
    max_model_len: int | None = None  # None: the model's own context length, capped by the KV memory
    gpu_memory_utilization: float | None = None  # None: 0.85 on GPU, 0.3 on CPU (fraction of host RAM there)
    kv_cache_gb: float | None = None  # None: vLLM's choice on GPU; on CPU $APO_LOCAL_CPU_KV_CACHE_GB, else 2 GiB
    tensor_parallel_size: int = 1
    enforce_eager: bool | None = None  # None: True on CPU (no graph capture there)
    seed: int = 0
    # Any other vllm.LLM keyword argument (quantization, trust_remote_code, tokenizer, tokenizer_mode,
    # pipeline_parallel_size, ...), frozen (``freeze``) so settings stay hashable; ``engine_kwargs()`` thaws.
    engine_args: tuple = field(default=())
    chat_template_kwargs: tuple = field(default=())  # e.g. enable_thinking; frozen like engine_args
    device: str | None = None  # CUDA device(s) of this engine, as CUDA_VISIBLE_DEVICES lists them
    base_url: str | None = None  # backend "openai": the server's URL (http://host:8000/v1)
    workers: int = 8  # backend "openai": requests in flight at once
    server_scoring: str = "auto"  # backend "openai": label-ids | echo | top-logprobs | generate | auto

    def __post_init__(self):
        for name in ("engine_args", "chat_template_kwargs"):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, freeze(value))

    def engine_kwargs(self) -> dict:
        return thaw(self.engine_args) if self.engine_args else {}

    def template_kwargs(self) -> dict:
        return thaw(self.chat_template_kwargs) if self.chat_template_kwargs else {}

    def resolved(self) -> EngineSettings:
        """Fill the None defaults for this machine."""
        gpu = has_cuda_gpu()
        return replace(
            self,
            gpu_memory_utilization=self.gpu_memory_utilization
            if self.gpu_memory_utilization is not None
            else (0.85 if gpu else 0.3),
            kv_cache_gb=self.kv_cache_gb if self.kv_cache_gb is not None or gpu else cpu_default_kv_cache_gb(),
            enforce_eager=self.enforce_eager if self.enforce_eager is not None else not gpu,
            dtype=self.dtype if self.dtype != "auto" or gpu else cpu_auto_dtype(),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["engine_args"], d["chat_template_kwargs"] = self.engine_kwargs(), self.template_kwargs()
        return d


KV_CACHE_ENV = "APO_LOCAL_CPU_KV_CACHE_GB"


def cpu_default_kv_cache_gb() -> float:
    """The KV cache of a CPU engine whose settings name none: ``APO_LOCAL_CPU_KV_CACHE_GB`` (GiB) where it is set,
    so a machine's operator sets it once for every run (and for the processes a run starts); else 2 GiB."""
    raw = os.environ.get(KV_CACHE_ENV, "").strip()
    if not raw:
        return 2.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ApoError(f"{KV_CACHE_ENV}={raw!r}: expected a positive number of GiB (e.g. 1 or 0.5)")
    return value


_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_auto_dtype(cpuinfo: str | None = None) -> str:
    """``dtype: auto`` on a CPU: the model's own dtype (bf16 for the embedded model) where the CPU computes
    bf16 natively (AVX-512 BF16 or AMX), else float32. Without native bf16, oneDNN emulates it: measured
    9x slower scoring on an AVX2-only CPU (docs/benchmarks.md), so float32 is the faster choice there."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            return "auto"  # not Linux: leave the choice to the backend
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return "auto" if any(f in flags for f in _NATIVE_BF16_FLAGS) else "float32"


def has_cuda_gpu() -> bool:
    """Whether this machine has an NVIDIA GPU, found **without initialising CUDA** in this process.

    vLLM starts its engine core in a forked child by default; a parent that has initialised CUDA
    (``torch.cuda.is_available()`` may, ``torch.cuda.device_count()`` on some builds does) makes
    that child fail with "Cannot re-initialize CUDA in forked subprocess". See ``cuda_devices``.
    """
    if os.environ.get("APO_LOCAL_FORCE_CPU") == "1":
        return False
    return cuda_devices() > 0


def cuda_devices(environ: dict | None = None, proc: str = "/proc/driver/nvidia/gpus") -> int:
    """How many CUDA devices this process may use, without touching CUDA: the NVIDIA driver's
    ``/proc`` listing (or NVML through ``nvidia-smi``-free ``pynvml`` where /proc is hidden, as in
    some containers), restricted by ``CUDA_VISIBLE_DEVICES``. 0 without a driver."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return 0
    n = _driver_gpus(proc)
    if visible is not None:
        listed = [v for v in visible.split(",") if v.strip()]
        n = min(n, len(listed)) if n else 0
    return n


def _driver_gpus(proc: str) -> int:
    try:
        return len([d for d in os.listdir(proc) if not d.startswith(".")])
    except OSError:
        pass
    try:  # NVML counts devices without creating a CUDA context (safe before a fork)
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


def cuda_start_environment(environ: dict | None = None, gpus: int | None = None) -> dict:
    """The process-start policy on CUDA: vLLM's worker processes are *spawned*, not forked
    (``VLLM_WORKER_MULTIPROC_METHOD=spawn``) unless the user chose a method. A forked child cannot
    use CUDA once anything in the parent touched it (torch, a library, a previous engine), and
    apo-local cannot promise nothing did. Spawned children re-import the ``__main__`` module, so a
    script that starts an engine must keep its top-level work under ``if __name__ == "__main__":``.
    Returns the variables it set (none on CPU)."""
    env = os.environ if environ is None else environ
    gpus = cuda_devices(env) if gpus is None else gpus
    if gpus <= 0 or env.get("APO_LOCAL_FORCE_CPU") == "1":
        return {}
    if "VLLM_WORKER_MULTIPROC_METHOD" in env:
        return {}
    env["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    return {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}


# Where distributions put TCMalloc (Debian/Ubuntu package libtcmalloc-minimal4, RHEL gperftools-libs).
_TCMALLOC_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def cpu_allocator_preload(environ: dict | None = None, search_dirs=_TCMALLOC_DIRS) -> str | None:
    """Put TCMalloc in ``LD_PRELOAD`` for the vLLM engine processes started after this call (CPU only).

    vLLM's CPU backend asks for TCMalloc in its engine processes (it preloads a copy bundled in some
    builds and warns when it is missing; the PyPI CPU wheel bundles none). With glibc's allocator the
    engine process grew twice as fast in ``scripts/soak.py`` (figures in docs/benchmarks.md). Uses the system's library when
    installed (``scripts/setup.sh`` installs it); ``APO_LOCAL_CPU_ALLOCATOR=system`` keeps glibc's.
    Returns the library preloaded, or None.
    """
    env = os.environ if environ is None else environ
    if env.get("APO_LOCAL_CPU_ALLOCATOR", "tcmalloc") != "tcmalloc":
        return None
    current = env.get("LD_PRELOAD", "")
    present = [p for p in current.split(":") if "libtcmalloc" in p]
    if present:
        return present[0]
    import glob

    for d in search_dirs:
        found = sorted(
            glob.glob(os.path.join(d, "libtcmalloc_minimal.so.*")) + glob.glob(os.path.join(d, "libtcmalloc.so.*"))
        )
        if found:
            env["LD_PRELOAD"] = found[0] + (":" + current if current else "")
            return found[0]
    return None


def cpu_engine_environment(environ: dict | None = None, search_dirs=_TCMALLOC_DIRS) -> dict:
    """The environment vLLM's engine processes get on CPU (set before the engine starts; they inherit it).

    - TCMalloc preloaded (``cpu_allocator_preload``).
    - oneDNN's process-wide primitive cache off (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``) unless the user
      set it: vLLM's CPU linear layers keep their own per-layer cache of oneDNN primitives (32 shapes
      each), and the global cache (1,024 entries by default) only duplicates them, one entry per new
      batch shape. Measured with ``scripts/soak.py``: it made the engine grow about 10 MiB per small
      optimization; off, about 2 MiB, at the same speed.

    Returns the variables it set.
    """
    env = os.environ if environ is None else environ
    applied = {}
    if "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in env:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = applied["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "0"
    before = env.get("LD_PRELOAD")
    if cpu_allocator_preload(env, search_dirs) and env.get("LD_PRELOAD") != before:
        applied["LD_PRELOAD"] = env["LD_PRELOAD"]
    return applied


@contextmanager
def scoped_environment(overrides: dict[str, str]):
    """``os.environ`` with ``overrides`` set while the block runs (an engine's start), then exactly as it was before:
    values restored, and keys the block added (the engine's own, too) removed."""
    saved = dict(os.environ)
    os.environ.update(overrides)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
