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
