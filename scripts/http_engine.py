"""The benchmarks' reference client: an OpenAI-compatible HTTP engine, one request per prompt.

Not part of the apo_local package: it serves ``bench_protegi.py`` and ``bench_scoring.py`` (and
``tests/engine/test_http_engine.py``), which import it from this folder. A first-class backend for
OpenAI-compatible servers would be designed as its own backend behind the ``Engine`` protocol.

This is the way the ProTeGi reference code, DSPy and GEPA use a local model: every (prompt,
example) pair is its own ``/v1/chat/completions`` request, answers are free text, and a pool of
worker threads keeps several requests in flight so the server can batch them. apo-local keeps it
behind the ``Engine`` protocol to *measure* that pattern against the in-process engine (the
benchmarks in ``scripts/``) and to talk to a server that is already running; it is not the fast path.

``score_choices`` is implemented the reference way: a greedy answer of ``answer_tokens`` tokens
(4 by default, as the reference's predictor asks for) is generated and parsed with
``parse_label``; the parsed label gets log-probability 0 and the other labels ``-inf``. An
answer that names no label is a result with ``error`` set (all ``-inf``), not an exception; so is
a prompt the server rejects (too long, bad request).

``hits`` is always 0: this engine has no cache, and it does not dedupe identical requests inside a
call (the reference pattern re-sends them). Wrap it in ``CachedEngine`` for the usual caching.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from apo_local.engine.protocol import ChoiceScores, Generation, GenerationRequest
from apo_local.support.errors import ApoError


class HttpEngine:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        workers: int = 32,
        max_model_len: int = 2048,
        tokenizer: str | Path | None = None,
        timeout: float = 600.0,
        answer_tokens: int = 4,
        model_id: str | None = None,
    ):
        import httpx

        if workers < 1:
            raise ApoError("http engine: workers must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.model = model  # the server's model name (its --served-model-name, or the folder it loaded)
        self.workers = workers
        self.max_model_len = max_model_len
        self.answer_tokens = answer_tokens
        self.model_id = model_id or f"http:{model}|{max_model_len}"
        self.hits = 0
        self.requests_sent = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
        )
        self._chat = None
        if tokenizer is not None:  # local token counts (budget checks, max_tokens capping) without a round trip
            from transformers import AutoTokenizer

            from apo_local.engine.chat import ChatFormatter

            self._chat = ChatFormatter(AutoTokenizer.from_pretrained(str(tokenizer)))

    def close(self) -> None:
        self._client.close()

    # -- protocol -------------------------------------------------------------------------

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        if self._chat is not None:
            return [len(self._chat.prompt_ids(p)) for p in prompts]
        return list(self._map(self._count_remote, prompts))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return list(self._map(self._generate_one, requests))

    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        from apo_local.tasks import parse_label

        reqs = [GenerationRequest(p, temperature=0.0, max_tokens=self.answer_tokens) for p in prompts]
        out = []
        for gen in self.generate(reqs):
            if gen.error is not None:
                out.append(ChoiceScores.failed(len(choices), gen.input_tokens, gen.error))
                continue
            label = parse_label(gen.text, choices)
            if label is None:
                out.append(ChoiceScores.failed(len(choices), gen.input_tokens, f"no label in answer {gen.text!r}"))
            else:
                out.append(ChoiceScores(tuple(0.0 if c == label else -math.inf for c in choices), gen.input_tokens))
        return out

    # -- one request ----------------------------------------------------------------------

    def _map(self, fn, items):
        if len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            return list(pool.map(fn, items))

    def _post(self, path: str, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests_sent += 1
        resp = self._client.post(path, json=body)
        try:
            data = resp.json()
        except json.JSONDecodeError:
            data = {"error": {"message": resp.text[:300]}}
        return resp.status_code, data

    def _count_remote(self, prompt: str) -> int:
        status, data = self._post(
            "/tokenize",
            {"model": self.model, "messages": [{"role": "user", "content": prompt}], "add_generation_prompt": True},
        )
        if status != 200:
            raise ApoError(f"http engine: /tokenize failed ({status}): {_message(data)}")
        return int(data["count"])

    def _generate_one(self, req: GenerationRequest) -> Generation:
        n_in = None
        max_tokens = req.max_tokens
        if self._chat is not None:  # same capping as the in-process engine: never ask past the context
            n_in = len(self._chat.prompt_ids(req.prompt))
            room = self.max_model_len - n_in
            if room < 1:
                return Generation((), n_in, 0, f"prompt too long ({n_in} tokens > {self.max_model_len})")
            max_tokens = min(max_tokens, room)
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": req.prompt}],
            "temperature": req.temperature,
            "top_p": req.top_p,
            "max_tokens": max_tokens,
            "n": req.n,
        }
        if req.seed is not None:
            body["seed"] = req.seed
        if req.stop:
            body["stop"] = list(req.stop)
        try:
            status, data = self._post("/v1/chat/completions", body)
        except Exception as exc:  # connection reset, timeout: a failed result, like a rejected prompt
            return Generation((), n_in or 0, 0, f"request failed: {type(exc).__name__}: {exc}"[:300])
        if status != 200:
            return Generation((), n_in or 0, 0, f"server error {status}: {_message(data)}"[:300])
        usage = data.get("usage") or {}
        texts = tuple((c.get("message") or {}).get("content") or "" for c in data.get("choices", []))
        return Generation(texts, int(usage.get("prompt_tokens", n_in or 0)), int(usage.get("completion_tokens", 0)))


def _message(data: dict) -> str:
    err = data.get("error", data)
    if isinstance(err, dict):
        return str(err.get("message", err))
    return str(err)


# -- a local server, for benchmarks and tests ----------------------------------------------


class LocalServer:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1, started and stopped by us.

    Use as a context manager; the server runs in its own process group, which ``stop`` kills.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        port: int | None = None,
        max_model_len: int = 2048,
        kv_cache_bytes: int = 2 << 30,
        gpu_memory_utilization: float = 0.3,
        enforce_eager: bool = True,
        seed: int = 0,
        extra_args: Sequence[str] = (),
        log_path: str | Path | None = None,
        startup_timeout: float = 600.0,
        env: dict | None = None,
    ):
        self.extra_env = dict(env or {})
        self.model_path = str(model_path)
        self.port = port or free_port()
        self.max_model_len = max_model_len
        self.args = [
            "--model",
            self.model_path,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--max-model-len",
            str(max_model_len),
            "--gpu-memory-utilization",
            str(gpu_memory_utilization),
            "--seed",
            str(seed),
            "--enable-prefix-caching",
            "--uvicorn-log-level",
            "warning",
        ]
        if kv_cache_bytes:
            self.args += ["--kv-cache-memory-bytes", str(kv_cache_bytes)]
        if enforce_eager:
            self.args.append("--enforce-eager")
        self.args += list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.proc = None
        self.startup_seconds = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalServer:
        import os
        import subprocess
        import sys
        import time

        import httpx

        from apo_local.engine.settings import cpu_engine_environment, has_cuda_gpu
        from apo_local.support._offline import OFFLINE_ENV

        env = dict(os.environ, **OFFLINE_ENV, **self.extra_env)
        if not has_cuda_gpu():
            cpu_engine_environment(env)  # what in-process engines get
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            while True:
                if self.proc.poll() is not None:
                    raise ApoError(
                        f"vLLM server exited with code {self.proc.returncode} during start-up"
                        + (f" (log: {self.log_path})" if self.log_path else "")
                    )
                try:
                    if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - t0 > self.startup_timeout:
                    raise ApoError(f"vLLM server not healthy after {self.startup_timeout:.0f} s")
                time.sleep(1)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - t0
        return self

    def stop(self) -> None:
        import os
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its engine-core children
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus counters (``vllm:prompt_tokens_total``, ``vllm:prefix_cache_hits_total``, ...),
        summed over label sets."""
        import httpx

        out: dict[str, float] = {}
        for line in httpx.get(self.base_url + "/metrics", timeout=10).text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                pass
        return out

    def reset_prefix_cache(self) -> bool:
        """Empty the server's prefix cache (needs ``VLLM_SERVER_DEV_MODE=1`` in ``env``); False if refused."""
        import httpx

        return httpx.post(self.base_url + "/reset_prefix_cache", timeout=60).status_code == 200

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
