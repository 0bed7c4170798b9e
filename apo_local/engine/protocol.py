"""The engine protocol: two batched operations that every backend implements.

- ``generate(requests)``: sampled text, per-request settings (optimizer role, generative tasks).
- ``score_choices(prompts, choices)``: log P(choice | prompt) for every allowed label, from a
  forward pass with no sampling (classification: the prediction is the argmax).

Prompts are user-message texts; the engine applies the model's chat template.

A request may carry a ``ReplyShape``: the reply must match it whole (guided decoding; the vLLM backend
passes it as structured outputs, the transformers backend masks the logits with the same grammar).
Every sample reports why it ended (``Generation.finish_reasons``): ``stop``, ``length`` (the token
budget ran out: the reply is truncated) or ``repetition`` (the request's ``repetition`` rule stopped a
sample whose last tokens repeat: ``tail_repeats``; vLLM's ``repetition_detection``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ReplyShape:
    """What a reply must look like, whole: ``kind`` is ``regex`` (``spec`` a regular expression), ``json``
    (``spec`` a JSON schema, as text) or ``choice`` (``spec`` the allowed replies, one per line)."""

    kind: str
    spec: str

    def __post_init__(self) -> None:
        if self.kind not in ("regex", "json", "choice"):
            raise ValueError(f"unknown reply shape kind {self.kind!r}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "spec": self.spec}


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    shape: ReplyShape | None = None  # guided decoding: the reply must match this whole
    repetition: tuple[int, int, int] | None = None  # stop a looping sample: (min, max block tokens, copies)

    def settings(self) -> dict:
        d = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "n": self.n,
            "seed": self.seed,
            "stop": list(self.stop),
        }
        if self.shape is not None:  # only then: unguided requests keep their cache keys
            d["shape"] = self.shape.to_dict()
        if self.repetition is not None:  # likewise
            d["repetition"] = list(self.repetition)
        return d


def tail_repeats(token_ids: Sequence[int], min_size: int, max_size: int, copies: int) -> bool:
    """The last ``size`` tokens, for some ``size`` in ``min_size..max_size``, repeat the ``copies - 1`` blocks
    of ``size`` tokens before them (vLLM's ``repetition_detection`` rule, for every backend)."""
    n = len(token_ids)
    for size in range(max(1, min_size), max_size + 1):
        if size * copies > n:
            return False
        tail = token_ids[n - size :]
        if all(token_ids[n - (c + 1) * size : n - c * size] == tail for c in range(1, copies)):
            return True
    return False


@dataclass(frozen=True)
class Generation:
    texts: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    error: str | None = None  # e.g. "prompt too long (2100 tokens > 2048)"; texts is then empty
    finish_reasons: tuple[str, ...] = ()  # per sample: "stop", "length" (truncated) or "repetition"; empty: not known

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""

    def truncated(self, i: int) -> bool:
        """Sample ``i`` ended because the token budget ran out."""
        return i < len(self.finish_reasons) and self.finish_reasons[i] == "length"


@dataclass(frozen=True)
class ChoiceScores:
    logprobs: tuple[float, ...]  # one per choice, in the order given
    input_tokens: int
    error: str | None = None  # the prompt could not be scored; logprobs are all -inf

    @property
    def best(self) -> int | None:
        if self.error is not None or not self.logprobs:
            return None
        return max(range(len(self.logprobs)), key=lambda i: (self.logprobs[i], -i))

    @classmethod
    def failed(cls, n_choices: int, input_tokens: int, error: str) -> ChoiceScores:
        return cls(tuple([-math.inf] * n_choices), input_tokens, error)


@runtime_checkable
class Engine(Protocol):
    """A loaded model. ``model_id`` identifies weights + settings (cache keys use it)."""

    model_id: str
    max_model_len: int

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]: ...

    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]: ...

    def count_tokens(self, prompts: Sequence[str]) -> list[int]: ...
