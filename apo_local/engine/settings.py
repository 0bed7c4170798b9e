"""Engine settings and the hardware-dependent defaults that make an engine start."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class EngineSettings:
    model: str | None = None  # registry alias or local folder; None = the registry default
    backend: str = "vllm"  # "vllm" (default) or "transformers" (fallback where vLLM can't be installed)
    dtype: str = "auto"
    max_model_len: int | None = 2048
    gpu_memory_utilization: float | None = None  # None: 0.85 on GPU, 0.3 on CPU (fraction of host RAM there)
    kv_cache_gb: float | None = None  # None: vLLM's choice on GPU, 2 GiB on CPU
    tensor_parallel_size: int = 1
    enforce_eager: bool | None = None  # None: True on CPU (no graph capture there)
    seed: int = 0

    def resolved(self) -> "EngineSettings":
        """Fill the None defaults for this machine."""
        gpu = has_cuda_gpu()
        return replace(
            self,
            gpu_memory_utilization=self.gpu_memory_utilization
            if self.gpu_memory_utilization is not None
            else (0.85 if gpu else 0.3),
            kv_cache_gb=self.kv_cache_gb if self.kv_cache_gb is not None or gpu else 2.0,
            enforce_eager=self.enforce_eager if self.enforce_eager is not None else not gpu,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def has_cuda_gpu() -> bool:
    if os.environ.get("APO_LOCAL_FORCE_CPU") == "1":
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken CUDA runtime: treat as CPU
        return False


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
        found = sorted(glob.glob(os.path.join(d, "libtcmalloc_minimal.so.*")) + glob.glob(os.path.join(d, "libtcmalloc.so.*")))
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
