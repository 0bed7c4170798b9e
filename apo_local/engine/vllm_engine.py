"""In-process vLLM backend: one ``vllm.LLM``, one batch per call, prefix caching on.

Classification scoring uses ``SamplingParams.logprob_token_ids``: one decode step returns the
full-vocabulary log-probability of exactly the label tokens we ask for. Multi-token labels are
scored exactly by extending the prompt with each label's token prefix (all prefixes of all
labels go into the same batch; the prefix cache makes the shared prompt nearly free), and
summing the per-token log-probabilities.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from apo_local.engine.batch_tokens import BatchTokenizer
from apo_local.engine.chat import ChatFormatter
from apo_local.engine.modelinfo import model_fingerprint
from apo_local.engine.protocol import ChoiceScores, Generation, GenerationRequest
from apo_local.engine.settings import (
    EngineSettings,
    cpu_engine_environment,
    cuda_start_environment,
    has_cuda_gpu,
    scoped_environment,
)
from apo_local.engine.start_failure import start_failure
from apo_local.support.errors import ApoError
from apo_local.support.quiet import StartupTap, drop_vllm_noise, quiet

__all__ = ["ChatFormatter", "VLLMEngine", "model_fingerprint"]  # the first two re-exported for old imports

log = logging.getLogger(__name__)


def _progress(n: int):
    """vLLM's progress hook: counts finished requests and generated tokens for the heartbeat of long calls
    (``engine/progress.py``), and draws a bar for long batches when a person is watching."""
    from apo_local.engine.progress import ProgressBar

    return ProgressBar.drawn(n >= 256 and sys.stderr.isatty())


def _digest(obj) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


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


def _label_params(SamplingParams, token_ids: list[int]):
    """One greedy step returning the log-probabilities of exactly ``token_ids`` (vLLM >= 0.26's
    ``logprob_token_ids``; every version apo-local supports has it, but a clear line if not)."""
    try:
        return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=token_ids, detokenize=False)
    except TypeError as exc:
        if "logprob_token_ids" in str(exc):
            import vllm

            raise ApoError(
                f"vLLM {vllm.__version__} has no SamplingParams.logprob_token_ids; apo-local needs vLLM 0.26 or newer"
            ) from None
        raise


def _guide(shape):
    """vLLM structured outputs for a ``ReplyShape`` (None: free text)."""
    if shape is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if shape.kind == "choice":
        return StructuredOutputsParams(choice=shape.spec.split("\n"))
    return StructuredOutputsParams(**{shape.kind: shape.spec})


def _repetition(rule) -> dict:
    """``SamplingParams`` keywords for a request's ``repetition`` rule (none: no rule, or a vLLM without
    ``repetition_detection``, where the optimizer still cuts loops from the text)."""
    if rule is None:
        return {}
    try:
        from vllm.sampling_params import RepetitionDetectionParams
    except ImportError:
        return {}
    low, high, copies = rule
    return {
        "repetition_detection": RepetitionDetectionParams(min_pattern_size=low, max_pattern_size=high, min_count=copies)
    }


def engine_kwargs(model_path: Path, s: EngineSettings, cuda: bool) -> dict:
    """The ``vllm.LLM`` keyword arguments for resolved settings ``s``: apo-local's defaults, then
    ``s.engine_args`` (any vLLM argument, passed through and winning over the defaults)."""
    kwargs = dict(
        model=str(model_path),
        dtype=s.dtype,
        # None: the model's own context length, lowered by vLLM to what the KV memory holds (-1)
        max_model_len=s.max_model_len if s.max_model_len is not None else -1,
        gpu_memory_utilization=s.gpu_memory_utilization,
        tensor_parallel_size=s.tensor_parallel_size,
        enforce_eager=s.enforce_eager,
        seed=s.seed,
        enable_prefix_caching=True,
    )
    if s.kv_cache_gb is not None:
        kwargs["kv_cache_memory_bytes"] = int(s.kv_cache_gb * (1 << 30))
    if not cuda:
        # vLLM-CPU's default KV block is 128 tokens and prefix-cache hits come in whole blocks: with
        # 32 (the smallest its attention kernel takes) candidates sharing a ~250-token instruction reuse
        # most of it. Measured: 2.1x less prefill and 2.0x less CPU on 16 candidates x 64 Liar rows.
        kwargs["block_size"] = 32
    kwargs.update(s.engine_kwargs())
    return kwargs


def _start_environment(s: EngineSettings, in_process: bool) -> dict:
    """Variables vLLM reads at engine start only (the rest of the process keeps its own)."""
    env = {}
    if in_process:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if s.device is not None:
        env["CUDA_VISIBLE_DEVICES"] = s.device  # placement: the engine's worker processes see these GPUs
    return env


class VLLMEngine:
    def __init__(self, model_path: Path, settings: EngineSettings, role: str | None = None):
        cuda = has_cuda_gpu()
        if cuda:
            cuda_start_environment()  # spawn, not fork, the engine processes (before vLLM is imported)
        tap = StartupTap() if quiet() else None  # before the import: vLLM prints at import time too
        try:
            from vllm import LLM  # imported here: importing vLLM is slow and only this backend needs it
        except Exception:
            if tap:
                tap.release(replay=True)
            raise

        settings = settings.resolved()
        self.settings = settings
        self.llm = None
        kwargs = engine_kwargs(model_path, settings, cuda)
        in_process = False
        if not cuda:
            cpu_engine_environment()  # TCMalloc, bounded oneDNN cache: inherited by the engine processes
            in_process = cpu_engine_in_process() and "distributed_executor_backend" not in settings.engine_kwargs()
            if in_process:
                kwargs["distributed_executor_backend"] = "uni"
        self.in_process = in_process
        if in_process:
            drop_vllm_noise()
        try:
            with scoped_environment(_start_environment(settings, in_process)):
                self.llm = LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; the user needs one actionable line
            held = tap.release(replay=False) if tap else []
            tap = None
            raise ApoError(start_failure(model_path, settings, exc, held, role)) from None
        finally:
            if tap:
                tap.release(replay=False)  # quiet: start-up chatter is not the user's business
        if in_process:
            _IN_PROCESS.add(self)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.model_id = f"{model_fingerprint(model_path)}|{settings.dtype}|{self.max_model_len}"
        from apo_local.models.registry import chat_template_for

        self.chat = ChatFormatter(
            self.llm.get_tokenizer(), chat_template_for(model_path), settings.template_kwargs(), name=str(model_path)
        )
        self.model_id += self.chat.template_id
        self.tokens = BatchTokenizer(self.chat)
        if settings.engine_args:  # arguments that may change outputs (quantization, tokenizer, ...)
            self.model_id += "|args:" + _digest(settings.engine_kwargs())

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
        return [len(ids) for ids in self._prompt_ids(prompts)]

    def _prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Every prompt's ids in one batched, joined tokenization (``batch_tokens``); = ``chat.prompt_ids``."""
        tokens = getattr(self, "tokens", None)
        if tokens is None:
            tokens = self.tokens = BatchTokenizer(self.chat)
        return tokens.ids(prompts)

    def _too_long(self, ids: list[int], reserve: int) -> str | None:
        """``ChatFormatter.fit``'s check and message, on ids already made."""
        limit = self.max_model_len - reserve
        return f"prompt too long ({len(ids)} tokens > {limit})" if len(ids) > limit else None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        from vllm import SamplingParams

        results: list[Generation | None] = [None] * len(requests)
        batch, params, index = [], [], []
        shared: dict[tuple, object] = {}  # one SamplingParams per distinct setting
        for i, (req, ids) in enumerate(zip(requests, self._prompt_ids([r.prompt for r in requests]))):
            error = self._too_long(ids, 1)
            if error:
                results[i] = Generation((), len(ids), 0, error)
                continue
            room = self.max_model_len - len(ids)
            # A seeded request for n samples goes in as n requests seeded seed, seed+1, ...: vLLM-CPU fails on
            # seeded n > 1 ("CPU Generator does not use offset"), and this way sample k is the same on any device.
            copies = [(req.n, req.seed)] if req.seed is None else [(1, req.seed + k) for k in range(req.n)]
            for n, seed in copies:
                key = (
                    n,
                    req.temperature,
                    req.top_p,
                    min(req.max_tokens, room),
                    seed,
                    req.stop,
                    req.shape,
                    req.repetition,
                )
                if key not in shared:
                    shared[key] = SamplingParams(
                        n=n,
                        temperature=req.temperature,
                        top_p=req.top_p,
                        max_tokens=key[3],
                        seed=seed,
                        stop=list(req.stop) or None,
                        structured_outputs=_guide(req.shape),
                        **_repetition(req.repetition),
                    )
                batch.append({"prompt_token_ids": ids})
                params.append(shared[key])
                index.append(i)
        if batch:
            outputs = self.llm.generate(batch, params, use_tqdm=_progress(len(batch)))
            texts: dict[int, list[str]] = {}
            reasons: dict[int, list[str]] = {}
            out_tokens: dict[int, int] = {}
            in_tokens: dict[int, int] = {}
            for i, out in zip(index, outputs):
                texts.setdefault(i, []).extend(self.chat.clean_reply(o.text) for o in out.outputs)
                reasons.setdefault(i, []).extend(str(o.finish_reason or "stop") for o in out.outputs)
                out_tokens[i] = out_tokens.get(i, 0) + sum(len(o.token_ids) for o in out.outputs)
                in_tokens[i] = len(out.prompt_token_ids)  # one prompt, however many samples
            for i in texts:
                results[i] = Generation(tuple(texts[i]), in_tokens[i], out_tokens[i], None, tuple(reasons[i]))
        return results  # type: ignore[return-value]

    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        label_ids = self.chat.label_ids(choices)
        longest = max(len(ids) for ids in label_ids)
        # Every (label prefix -> next tokens) step that any label needs: one decode step each.
        steps: dict[tuple[int, ...], list[int]] = {}
        for ids in label_ids:
            for d in range(len(ids)):
                nxt = steps.setdefault(ids[:d], [])
                if ids[d] not in nxt:
                    nxt.append(ids[d])
        results: list[ChoiceScores | None] = [None] * len(prompts)
        batch, params, keys = self._build(prompts, steps, longest, len(choices), results)
        if batch:
            outputs = self.llm.generate(batch, params, use_tqdm=_progress(len(batch)))
            self._parse(outputs, keys, steps, label_ids, results)
        return results  # type: ignore[return-value]

    def _build(self, prompts, steps, longest: int, n_choices: int, results: list) -> tuple[list, list, list]:
        """The engine's inputs: one request per (prompt, label step), one shared SamplingParams per step."""
        from vllm import SamplingParams

        step_params = [(prefix, _label_params(SamplingParams, nxt)) for prefix, nxt in steps.items()]
        batch, params, keys = [], [], []
        for i, ids in enumerate(self._prompt_ids(prompts)):
            error = self._too_long(ids, longest)
            if error:
                results[i] = ChoiceScores.failed(n_choices, len(ids), error)
                continue
            for prefix, sp in step_params:
                batch.append({"prompt_token_ids": ids + list(prefix) if prefix else ids})
                params.append(sp)
                keys.append((i, prefix, len(ids)))
        return batch, params, keys

    def _parse(self, outputs, keys, steps, label_ids, results: list) -> None:
        """Label log-probabilities from the outputs; a label's is the sum over its steps."""
        n_steps = len(steps)
        if n_steps == 1:  # one step (single-token labels): the common case, no dictionaries
            (nxt,) = steps.values()
            order = [nxt.index(ids[0]) for ids in label_ids]
            for (i, _, n_ids), out in zip(keys, outputs):
                lp = out.outputs[0].logprobs[0]
                got = [lp[tok].logprob for tok in nxt]
                results[i] = ChoiceScores(tuple(got[k] for k in order), n_ids)
            return
        step_logprobs: dict[tuple[int, tuple[int, ...]], dict[int, float]] = {}
        input_tokens: dict[int, int] = {}
        for (i, prefix, n_ids), out in zip(keys, outputs):
            lp = out.outputs[0].logprobs[0]
            step_logprobs[(i, prefix)] = {tok: lp[tok].logprob for tok in steps[prefix]}
            input_tokens[i] = n_ids
        for i in input_tokens:
            results[i] = ChoiceScores(
                tuple(sum(step_logprobs[(i, ids[:d])][ids[d]] for d in range(len(ids))) for ids in label_ids),
                input_tokens[i],
            )
