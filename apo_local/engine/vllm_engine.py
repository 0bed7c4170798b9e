"""In-process vLLM backend: one ``vllm.LLM``, one batch per call, prefix caching on.

Classification scoring uses ``SamplingParams.logprob_token_ids``: one decode step returns the
full-vocabulary log-probability of exactly the label tokens we ask for. Multi-token labels are
scored exactly by extending the prompt with each label's token prefix (all prefixes of all
labels go into the same batch; the prefix cache makes the shared prompt nearly free), and
summing the per-token log-probabilities.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import logging
from pathlib import Path
from typing import Sequence
from unittest import mock

from apo_local.engine.protocol import ChoiceScores, Generation, GenerationRequest
from apo_local.quiet import StartupTap, drop_vllm_noise, quiet
from apo_local.engine.settings import EngineSettings, cpu_engine_environment, has_cuda_gpu
from apo_local.errors import ApoError

log = logging.getLogger(__name__)


def model_fingerprint(path: Path) -> str:
    """Identity of a model folder: its name plus a hash of its config and weight sizes."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.name == "config.json":
            h.update(f.read_bytes())
        elif f.suffix in {".safetensors", ".bin", ".json", ".model"}:
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"{path.name}@{h.hexdigest()[:12]}"


def _progress(n: int) -> bool:
    """A progress bar for long batches when a person is watching."""
    return n >= 256 and sys.stderr.isatty()


class ChatFormatter:
    """Applies the model's chat template and tokenizes; shared by the vLLM and transformers backends."""

    def __init__(self, tokenizer, chat_template: str | None = None):
        self.tokenizer = tokenizer
        self.chat_template = chat_template  # None: the tokenizer's own (registry: chat_template: builtin)
        self._label_ids: dict[str, tuple[int, ...]] = {}

    @property
    def template_id(self) -> str:
        """Part of the model identity: the same prompt text under another template is another input."""
        return "" if self.chat_template is None else "|tpl:" + hashlib.sha256(self.chat_template.encode()).hexdigest()[:8]

    def prompt_ids(self, prompt: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False,
            chat_template=self.chat_template,
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def fit(self, prompt: str, limit: int) -> tuple[list[int], str | None]:
        """The prompt's ids, and an error when they exceed ``limit`` tokens (the context minus what the reply needs)."""
        ids = self.prompt_ids(prompt)
        return ids, (f"prompt too long ({len(ids)} tokens > {limit})" if len(ids) > limit else None)

    def continuation_ids(self, label: str) -> tuple[int, ...]:
        """Tokens of ``label`` as the start of the assistant reply (context-aware tokenization)."""
        if label not in self._label_ids:
            prefix = self.prompt_ids("x")
            text = self.tokenizer.decode(prefix) + label
            full = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if full[: len(prefix)] == prefix and len(full) > len(prefix):
                ids = tuple(full[len(prefix) :])
            else:
                ids = tuple(self.tokenizer(label, add_special_tokens=False)["input_ids"])
            if not ids:
                raise ApoError(f"label {label!r} tokenizes to nothing")
            self._label_ids[label] = ids
        return self._label_ids[label]


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


def _start_failure(model_path: Path, s: EngineSettings, exc: Exception, held: list[str]) -> str:
    """One line: what failed and which setting to change (config key under target/optimizer, or flag)."""
    cause = _root_cause(exc, held)
    low = cause.lower()
    if "kv" in low and ("memory" in low or "cache" in low):
        fix = (f"lower kv_cache_gb (now {s.kv_cache_gb}; --target-kv-cache-gb / --optimizer-kv-cache-gb) "
               f"or max_model_len (now {s.max_model_len})")
    elif "memory" in low or "oom" in low.split() or "out of memory" in low:
        fix = (f"lower gpu_memory_utilization (now {s.gpu_memory_utilization}; --target-gpu-memory-utilization), "
               f"kv_cache_gb (now {s.kv_cache_gb}) or max_model_len (now {s.max_model_len}), "
               f"or free memory used by other processes")
    elif "max_model_len" in low or "max_position_embeddings" in low or "context length" in low:
        fix = f"lower max_model_len (now {s.max_model_len}; --target-max-model-len)"
    else:
        fix = (f"check the model folder (target.model / optimizer.model), or lower gpu_memory_utilization "
               f"(now {s.gpu_memory_utilization}), kv_cache_gb (now {s.kv_cache_gb}) or max_model_len "
               f"(now {s.max_model_len})")
    return f"engine failed to start for {model_path}: {cause} -- {fix}"


def cpu_engine_in_process() -> bool:
    """On CPU, run vLLM's engine core and model worker inside this process (``APO_LOCAL_CPU_ENGINE``:
    ``in-process``, the default, or ``subprocess``, vLLM's default).

    vLLM's default puts the scheduler and the model worker in two more processes and reserves one core
    for the scheduler, which polls: on a 2-core machine the model then computes on one core. In
    process, the model gets every core and the engine starts without spawning (measured in
    docs/benchmarks.md: about 1.8x faster scoring and 4 s instead of 30-40 s to start)."""
    mode = os.environ.get("APO_LOCAL_CPU_ENGINE", "in-process")
    if mode not in ("in-process", "subprocess"):
        raise ApoError(f"APO_LOCAL_CPU_ENGINE={mode!r}: use in-process or subprocess")
    return mode == "in-process"


_IN_PROCESS: set = set()  # live engines whose engine core runs in this process


class VLLMEngine:
    def __init__(self, model_path: Path, settings: EngineSettings):
        tap = StartupTap() if quiet() else None  # before the import: vLLM prints at import time too
        try:
            from vllm import LLM  # imported here: importing vLLM is slow and only this backend needs it
        except Exception:
            if tap:
                tap.release(replay=True)
            raise

        settings = settings.resolved()
        self.settings = settings
        kwargs = dict(
            model=str(model_path),
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            enforce_eager=settings.enforce_eager,
            seed=settings.seed,
            enable_prefix_caching=True,
        )
        if settings.kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(settings.kv_cache_gb * (1 << 30))
        if not has_cuda_gpu():
            # vLLM-CPU's default KV block is 128 tokens and prefix-cache hits come in whole blocks: with
            # 32 (the smallest its attention kernel takes) candidates sharing a ~250-token instruction reuse
            # most of it. Measured: 2.1x less prefill and 2.0x less CPU on 16 candidates x 64 Liar rows.
            kwargs["block_size"] = 32
            cpu_engine_environment()  # TCMalloc, bounded oneDNN cache: inherited by the engine processes
            in_process = cpu_engine_in_process()
            if in_process:
                kwargs["distributed_executor_backend"] = "uni"
        else:
            in_process = False
        self.in_process = in_process
        if in_process:
            drop_vllm_noise()
        try:
            # vLLM reads this at engine start only; the rest of the process keeps its own setting.
            with mock.patch.dict(os.environ, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if in_process else {}):
                self.llm = LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; the user needs one actionable line
            held = tap.release(replay=False) if tap else []
            tap = None
            raise ApoError(_start_failure(model_path, settings, exc, held)) from None
        finally:
            if tap:
                tap.release(replay=False)  # quiet: start-up chatter is not the user's business
        if in_process:
            _IN_PROCESS.add(self)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.model_id = f"{model_fingerprint(model_path)}|{settings.dtype}|{self.max_model_len}"
        from apo_local.models import chat_template_for

        self.chat = ChatFormatter(self.llm.get_tokenizer(), chat_template_for(model_path))
        self.model_id += self.chat.template_id

    def close(self) -> None:
        if self.in_process:
            # Engines in this process share vLLM's process-wide parallel state, which a shutdown tears
            # down: only the last one shuts down; the others are released (weights and KV freed by GC).
            _IN_PROCESS.discard(self)
            if _IN_PROCESS:
                self._release_beside_others()
                return
        core = getattr(self.llm.llm_engine, "engine_core", None) if self.llm is not None else None
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def _release_beside_others(self) -> None:
        """Stop this in-process engine's executor and scheduler but not vLLM's process-wide parallel
        state (another in-process engine still uses it): vLLM's own shutdown, minus that teardown."""
        import gc

        client = getattr(self.llm.llm_engine, "engine_core", None) if self.llm is not None else None
        finalizer = getattr(client, "_finalizer", None)
        try:
            if finalizer is not None and finalizer.detach() is not None:  # else it ran already
                core = client.engine_core
                for part in (getattr(core, "model_executor", None), getattr(core, "scheduler", None)):
                    if part is not None:
                        part.shutdown()
        except Exception as exc:  # internals of one vLLM version; releasing the memory still works
            log.warning("partial shutdown of an in-process engine failed (%s); releasing it", exc)
        self.llm = None
        gc.unfreeze()
        gc.collect()

    # -- protocol -------------------------------------------------------------------------

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(self.chat.prompt_ids(p)) for p in prompts]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        from vllm import SamplingParams, TokensPrompt

        results: list[Generation | None] = [None] * len(requests)
        batch, params, index = [], [], []
        for i, req in enumerate(requests):
            ids = self.chat.prompt_ids(req.prompt)
            room = self.max_model_len - len(ids)
            if room < 1:
                results[i] = Generation((), len(ids), 0, f"prompt too long ({len(ids)} tokens > {self.max_model_len})")
                continue
            # A seeded request for n samples goes in as n requests seeded seed, seed+1, ...: vLLM-CPU fails on
            # seeded n > 1 ("CPU Generator does not use offset"), and this way sample k is the same on any device.
            copies = [(req.n, req.seed)] if req.seed is None else [(1, req.seed + k) for k in range(req.n)]
            for n, seed in copies:
                batch.append(TokensPrompt(prompt_token_ids=ids))
                params.append(SamplingParams(n=n, temperature=req.temperature, top_p=req.top_p,
                                             max_tokens=min(req.max_tokens, room), seed=seed,
                                             stop=list(req.stop) or None))
                index.append(i)
        if batch:
            outputs = self.llm.generate(batch, params, use_tqdm=_progress(len(batch)))
            texts: dict[int, list[str]] = {}
            out_tokens: dict[int, int] = {}
            in_tokens: dict[int, int] = {}
            for i, out in zip(index, outputs):
                texts.setdefault(i, []).extend(o.text for o in out.outputs)
                out_tokens[i] = out_tokens.get(i, 0) + sum(len(o.token_ids) for o in out.outputs)
                in_tokens[i] = len(out.prompt_token_ids)  # one prompt, however many samples
            for i in texts:
                results[i] = Generation(tuple(texts[i]), in_tokens[i], out_tokens[i])
        return results  # type: ignore[return-value]

    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        from vllm import SamplingParams, TokensPrompt

        label_ids = [self.chat.continuation_ids(c) for c in choices]
        longest = max(len(ids) for ids in label_ids)
        # Every (label prefix -> next tokens) step that any label needs: one decode step each.
        steps: dict[tuple[int, ...], list[int]] = {}
        for ids in label_ids:
            for d in range(len(ids)):
                nxt = steps.setdefault(ids[:d], [])
                if ids[d] not in nxt:
                    nxt.append(ids[d])

        results: list[ChoiceScores | None] = [None] * len(prompts)
        batch, params, keys = [], [], []
        for i, prompt in enumerate(prompts):
            ids, error = self.chat.fit(prompt, self.max_model_len - longest)
            if error:
                results[i] = ChoiceScores.failed(len(choices), len(ids), error)
                continue
            for prefix, nxt in steps.items():
                batch.append(TokensPrompt(prompt_token_ids=ids + list(prefix)))
                params.append(SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=nxt, detokenize=False))
                keys.append((i, prefix, len(ids)))
        step_logprobs: dict[tuple[int, tuple[int, ...]], dict[int, float]] = {}
        input_tokens: dict[int, int] = {}
        if batch:
            outputs = self.llm.generate(batch, params, use_tqdm=_progress(len(batch)))
            for (i, prefix, n_ids), out in zip(keys, outputs):
                lp = out.outputs[0].logprobs[0]
                step_logprobs[(i, prefix)] = {tok: lp[tok].logprob for tok in steps[prefix]}
                input_tokens[i] = n_ids
        for i in input_tokens:
            results[i] = ChoiceScores(
                tuple(sum(step_logprobs[(i, ids[:d])][ids[d]] for d in range(len(ids))) for ids in label_ids),
                input_tokens[i],
            )
        return results  # type: ignore[return-value]
