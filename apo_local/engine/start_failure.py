"""An engine that fails to start: one line naming the most specific cause (the engine process's own error line
where vLLM only points at it) and the setting to change, under the failing role's config key or flag."""

from __future__ import annotations

import re
from pathlib import Path

from apo_local.engine.settings import EngineSettings

_CAUSE = re.compile(r"\b(?:[A-Za-z_.]*(?:Error|Exception)|ValueError|RuntimeError): (.+)")
_WRAPPED = re.compile(r"Worker failed with error '(.+)', please check the stack trace")


def _root_cause(exc: Exception, held: list[str]) -> str:
    """The most specific error line: ``exc``'s own, unless it only points at the engine process's
    output ("See root cause above"), whose last error line is then used."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    own = lines[0]
    if re.match(r"\d+ validation errors? for ", own) and len(lines) > 1:  # pydantic: the message follows
        message = next((line for line in lines[1:] if " [type=" in line), lines[1])
        own = re.sub(r"^Value error, ", "", message).split(" [type=")[0]
    if "initialization failed" in own or "root cause" in own:
        for line in reversed(held):
            m = _CAUSE.search(line)
            if m and "initialization failed" not in m.group(1) and "root cause above" not in m.group(1):
                cause = m.group(1).strip()
                wrapped = _WRAPPED.search(cause)
                return (wrapped.group(1) if wrapped else cause)[:300]
    return own[:300]


def start_failure(model_path: Path, s: EngineSettings, exc: Exception, held: list[str], role: str | None = None) -> str:
    """One line: what failed and which setting to change (config key under target/optimizer, or flag)."""
    cause = _root_cause(exc, held)
    low = cause.lower()
    roles = [role] if role else ["target", "optimizer"]
    flag = lambda name: " / ".join(f"--{r}-{name}" for r in roles)  # noqa: E731
    if "kv" in low and ("memory" in low or "cache" in low):
        fix = (
            f"lower kv_cache_gb (now {s.kv_cache_gb}; {flag('kv-cache-gb')}) "
            f"or max_model_len (now {s.max_model_len}; {flag('max-model-len')})"
        )
    elif "memory" in low or "oom" in low.split() or "out of memory" in low:
        fix = (
            f"lower gpu_memory_utilization (now {s.gpu_memory_utilization}; {flag('gpu-memory-utilization')}), "
            f"kv_cache_gb (now {s.kv_cache_gb}) or max_model_len (now {s.max_model_len}), "
            f"or free memory used by other processes"
        )
    elif "max_model_len" in low or "max_position_embeddings" in low or "context length" in low:
        fix = f"lower max_model_len (now {s.max_model_len}; {flag('max-model-len')})"
    elif "unexpected keyword" in low or "engine_args" in low or "engineargs" in low or "unrecognized" in low:
        fix = f"check {' / '.join(f'{r}.engine_args' for r in roles)} (now {s.engine_kwargs()})"
    else:
        fix = (
            f"check the model folder (target.model / optimizer.model), or lower gpu_memory_utilization "
            f"(now {s.gpu_memory_utilization}), kv_cache_gb (now {s.kv_cache_gb}) or max_model_len "
            f"(now {s.max_model_len})"
        )
    return f"engine failed to start for {model_path}: {cause} -- {fix}"
