"""An OpenAI-compatible server as an engine (a vLLM or SGLang server on the local network).

For models that do not fit in this process, or a server that already runs. Every request goes to the
configured base URL only (no proxy from the environment, no redirects); requests of one batch run on
a bounded worker pool (``workers``). The result cache and the trace wrap it as any other backend.

Label scoring, the best way the server offers (``server_scoring: auto`` probes them in this order):

- ``label-ids``: the exact log-probabilities of each label's tokens after the prompt's tokens (vLLM's
  ``logprob_token_ids`` on ``/v1/completions``, prompts as token ids from its ``/tokenize``): one
  decode step per label prefix, the same numbers the in-process engine computes;
- ``echo``: the prompt + label scored as a prompt (``echo`` with ``logprobs``), one request per label;
- ``top-logprobs``: the chat endpoint's top log-probabilities of the reply's first token (a label
  counts by its first token: labels must differ there);
- ``generate``: generate-and-parse; the label the greedy reply starts with gets log-prob 0, the rest
  -inf (a reply that names no label is an error, counted as wrong).

``APO_LOCAL_OPENAI_API_KEY``, when set, is sent as the bearer token (never written anywhere).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from apo_local.engine.chat import strip_thinking
from apo_local.engine.openai_client import ServerClient, ServerError
from apo_local.engine.protocol import ChoiceScores, Generation, GenerationRequest
from apo_local.engine.settings import EngineSettings
from apo_local.support.errors import ApoError

log = logging.getLogger(__name__)

SCORING_MODES = ("label-ids", "echo", "top-logprobs", "generate")
TOP_LOGPROBS = 20
_PROBE = "Reply with one word."


class OpenAIEngine:
    def __init__(self, settings: EngineSettings, role: str | None = None):
        if not settings.base_url:
            raise ApoError(
                f"{role or 'target'}.base_url: the openai backend needs the server's URL "
                f"(e.g. http://127.0.0.1:8000/v1)"
            )
        self.settings = settings
        self.client = ServerClient(settings.base_url, os.environ.get("APO_LOCAL_OPENAI_API_KEY"))
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="apo-openai")
        self.load_seconds = 0.0
        try:
            card = self.client.model_card(settings.model)
        except ServerError as exc:
            raise ApoError(f"{role or 'target'}: {exc}") from None
        self.model = card["id"]
        self.max_model_len = settings.max_model_len or card.get("max_model_len") or 0
        if not self.max_model_len:
            raise ApoError(
                f"{role or 'target'}.max_model_len: the server at {self.client.base} does not say its "
                f"context length; set it"
            )
        self.kwargs = settings.template_kwargs()
        self._label_ids: dict[tuple[str, ...], list[tuple[int, ...]]] = {}
        self.can_tokenize = self._tokenize_works()
        self.scoring = self._scoring_mode(settings.server_scoring)
        self.model_id = (
            f"openai:{self.client.base}|{self.model}|{card.get('root') or ''}|{self.max_model_len}"
            f"|{self.scoring}" + (f"|kw:{sorted(self.kwargs.items())}" if self.kwargs else "")
        )
        log.info(
            "server %s: model %s, context %d, label scoring by %s",
            self.client.base,
            self.model,
            self.max_model_len,
            self.scoring,
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()

    # -- server capabilities ------------------------------------------------------------------------

    def _tokenize_works(self) -> bool:
        try:
            return bool(self._prompt_ids(_PROBE))
        except ServerError:
            return False

    def _scoring_mode(self, wanted: str) -> str:
        if wanted != "auto":
            if wanted in ("label-ids", "echo") and not self.can_tokenize:
                raise ApoError(f"server_scoring {wanted}: the server at {self.client.base} has no /tokenize")
            return wanted
        for mode in SCORING_MODES[:-1]:
            if mode in ("label-ids", "echo") and not self.can_tokenize:
                continue
            try:
                self._score_one(_PROBE, ["Yes", "No"], mode)
                return mode
            except (ServerError, KeyError, IndexError, TypeError, ValueError) as exc:
                log.info("server %s: label scoring by %s not offered (%s)", self.client.base, mode, str(exc)[:120])
        log.warning("server %s offers no log-probabilities: labels are scored by generate-and-parse", self.client.base)
        return "generate"

    # -- tokens ------------------------------------------------------------------------------------

    def _chat_tokens(self, messages: list[dict], **how) -> list[int]:
        body = {"model": self.model, "messages": messages, **how}
        if self.kwargs:
            body["chat_template_kwargs"] = self.kwargs
        return list(self.client.post("/tokenize", body, root=True)["tokens"])

    def _prompt_ids(self, prompt: str) -> list[int]:
        return self._chat_tokens([{"role": "user", "content": prompt}], add_generation_prompt=True)

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        if not self.can_tokenize:  # a rough figure: 4 characters a token, plus the chat template's turn
            return [len(p) // 4 + 8 for p in prompts]
        return list(self.pool.map(lambda p: len(self._prompt_ids(p)), prompts))

    def label_ids(self, labels: Sequence[str]) -> list[tuple[int, ...]]:
        """Each label's tokens as the start of the assistant reply (as the server's template renders
        it); when one label's tokens start another's, each gets the end-of-turn token appended."""
        key = tuple(labels)
        if key not in self._label_ids:
            head = self._prompt_ids("x")
            ids, ends = [], []
            for label in labels:
                turn = [{"role": "user", "content": "x"}, {"role": "assistant", "content": label}]
                open_ = self._chat_tokens(turn, add_generation_prompt=False, continue_final_message=True)
                whole = self._chat_tokens(turn, add_generation_prompt=False)
                if open_[: len(head)] != head or len(open_) <= len(head):
                    raise ApoError(f"label {label!r}: the server's chat template does not continue the prompt")
                ids.append(tuple(open_[len(head) :]))
                ends.append(whole[len(open_)] if len(whole) > len(open_) else None)
            nested = any(a != b and b[: len(a)] == a for a in ids for b in ids)
            if nested and None in ends:
                raise ApoError(
                    "labels: one is a prefix of another and the server's template has no end-of-turn "
                    "token to tell them apart; rename the labels"
                )
            self._label_ids[key] = [i + (e,) for i, e in zip(ids, ends)] if nested else ids
        return self._label_ids[key]

    # -- generation --------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return list(self.pool.map(self._generate_one, requests))

    def _generate_one(self, req: GenerationRequest) -> Generation:
        room = self.max_model_len
        if self.can_tokenize:
            n_in = len(self._prompt_ids(req.prompt))
            if n_in > self.max_model_len - 1:
                return Generation((), n_in, 0, f"prompt too long ({n_in} tokens > {self.max_model_len - 1})")
            room -= n_in
        # seeded n > 1: n requests seeded seed, seed+1, ... (as the in-process engine: sample k is the same anywhere)
        copies = [(req.n, req.seed)] if req.seed is None else [(1, req.seed + k) for k in range(req.n)]
        texts, n_in, n_out = [], 0, 0
        for n, seed in copies:
            body = {
                "model": self.model,
                "messages": [{"role": "user", "content": req.prompt}],
                "n": n,
                "temperature": req.temperature,
                "top_p": req.top_p,
                "max_tokens": min(req.max_tokens, room),
            }
            if seed is not None:
                body["seed"] = seed
            if req.stop:
                body["stop"] = list(req.stop)
            if self.kwargs:
                body["chat_template_kwargs"] = self.kwargs
            try:
                reply = self.client.post("/v1/chat/completions", body)
            except ServerError as exc:
                if exc.status == 400:  # the server refused this request (too long, bad setting): this one fails
                    return Generation((), n_in, 0, str(exc)[:300])
                raise ApoError(str(exc)) from None
            texts += [strip_thinking(c["message"].get("content") or "") for c in reply["choices"]]
            usage = reply.get("usage") or {}
            n_in, n_out = usage.get("prompt_tokens", 0), n_out + usage.get("completion_tokens", 0)
        return Generation(tuple(texts), n_in, n_out)

    # -- label scoring -----------------------------------------------------------------------------

    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        if self.scoring in ("label-ids", "echo"):
            self.label_ids(choices)  # once, before the workers need it

        def one(prompt: str) -> ChoiceScores:
            try:
                return self._score_one(prompt, choices, self.scoring)
            except ServerError as exc:
                if exc.status == 400:
                    return ChoiceScores.failed(len(choices), 0, str(exc)[:300])
                raise ApoError(str(exc)) from None

        return list(self.pool.map(one, prompts))

    def _score_one(self, prompt: str, choices: Sequence[str], mode: str) -> ChoiceScores:
        if mode in ("top-logprobs", "generate"):
            return self._score_by_chat(prompt, choices, mode)
        ids = self._prompt_ids(prompt)
        labels = self.label_ids(choices)
        limit = self.max_model_len - max(len(x) for x in labels)
        if len(ids) > limit:
            return ChoiceScores.failed(len(choices), len(ids), f"prompt too long ({len(ids)} tokens > {limit})")
        if mode == "echo":
            return ChoiceScores(tuple(self._echo_logprob(ids, lab) for lab in labels), len(ids))
        steps: dict[tuple[int, ...], list[int]] = {}  # every (label prefix -> next tokens) step: one request each
        for lab in labels:
            for d in range(len(lab)):
                nxt = steps.setdefault(lab[:d], [])
                if lab[d] not in nxt:
                    nxt.append(lab[d])
        got = {prefix: self._next_logprobs(ids + list(prefix), nxt) for prefix, nxt in steps.items()}
        return ChoiceScores(tuple(sum(got[lab[:d]][lab[d]] for d in range(len(lab))) for lab in labels), len(ids))

    def _completion(self, ids: list[int], **extra) -> dict:
        body = {
            "model": self.model,
            "prompt": ids,
            "max_tokens": 1,
            "temperature": 0.0,
            "return_tokens_as_token_ids": True,
            **extra,
        }
        return self.client.post("/v1/completions", body)["choices"][0]["logprobs"]

    def _next_logprobs(self, ids: list[int], wanted: list[int]) -> dict[int, float]:
        top = self._completion(ids, logprobs=1, logprob_token_ids=wanted)["top_logprobs"][0]
        by_id = {_token_id(k): v for k, v in top.items()}
        return {t: _finite(by_id[t]) for t in wanted}

    def _echo_logprob(self, ids: list[int], label: tuple[int, ...]) -> float:
        lp = self._completion(ids + list(label), logprobs=0, echo=True)["token_logprobs"]
        return sum(_finite(x) for x in lp[len(ids) : len(ids) + len(label)])

    def _score_by_chat(self, prompt: str, choices: Sequence[str], mode: str) -> ChoiceScores:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": 1 if mode == "top-logprobs" else max(8, max(len(c) for c in choices) // 2),
        }
        if mode == "top-logprobs":
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        if self.kwargs:
            body["chat_template_kwargs"] = self.kwargs
        reply = self.client.post("/v1/chat/completions", body)
        n_in = (reply.get("usage") or {}).get("prompt_tokens", 0)
        choice = reply["choices"][0]
        if mode == "top-logprobs":
            top = choice["logprobs"]["content"][0]["top_logprobs"]
            scores = tuple(_first_token_logprob(top, c) for c in choices)
            if all(s == -math.inf for s in scores):
                return ChoiceScores.failed(len(choices), n_in, f"no label among the top {TOP_LOGPROBS} first tokens")
            return ChoiceScores(scores, n_in)
        picked = parse_label(strip_thinking(choice["message"].get("content") or ""), choices)
        if picked is None:
            return ChoiceScores.failed(len(choices), n_in, "the reply names no label")
        return ChoiceScores(tuple(0.0 if i == picked else -math.inf for i in range(len(choices))), n_in)


def _token_id(key: str) -> int:
    return int(key.rpartition(":")[2])


def _finite(x) -> float:
    return -math.inf if x is None or x <= -9999.0 else float(x)  # vLLM writes -inf as -9999.0


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().split())


def _first_token_logprob(top: list[dict], label: str) -> float:
    """The best top-token log-prob whose text starts the label (first-token scoring)."""
    want = _norm(label)
    hits = [t["logprob"] for t in top if _norm(t["token"]) and want.startswith(_norm(t["token"]))]
    return max(hits) if hits else -math.inf


def parse_label(reply: str, choices: Sequence[str]) -> int | None:
    """The label a generated reply starts with (the longest that matches, case and spacing ignored)."""
    text = _norm(reply).lstrip("\"'*([ ")
    found = [i for i, c in enumerate(choices) if _norm(c) and text.startswith(_norm(c))]
    return max(found, key=lambda i: len(_norm(choices[i]))) if found else None


def wait_until_ready(base_url: str, seconds: float = 120.0) -> None:
    """Block until the server at ``base_url`` answers ``/v1/models`` (a server being started)."""
    client = ServerClient(base_url, None, timeout=5.0)
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                client.model_card(None)
                return
            except ServerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
    finally:
        client.close()
