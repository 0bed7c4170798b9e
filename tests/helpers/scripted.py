"""The one scripted engine of the logic tests: an ``Engine`` (``apo_local/engine/protocol.py``) whose replies and
label scores come from the test's script, never from a model.

``ScriptedEngine(reply=..., scores=..., replies=...)``:
- ``reply(request) -> Generation``: the generation of one request (every sample of it);
- ``replies``: instead, a queue of ``(texts, finish_reasons)``, one taken per request, in order;
- ``scores(prompt, choices) -> ChoiceScores``: the label scores of one prompt.
It records what it was asked: ``prompts`` (generation prompts), ``requests``, ``scored`` (scored prompts) and
``score_calls`` (batches). Tests of engine wrappers (slow, interrupted, counting engines) keep their own probes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from apo_local.engine.protocol import ChoiceScores, Generation, GenerationRequest


class ScriptedEngine:
    model_id, max_model_len, hits = "scripted", 2048, 0

    def __init__(
        self,
        reply: Callable[[GenerationRequest], Generation] | None = None,
        scores: Callable[[str, Sequence[str]], ChoiceScores] | None = None,
        replies: Sequence[tuple[Sequence[str], Sequence[str]]] | None = None,
    ):
        self.reply, self.scores = reply, scores
        self.replies = list(replies) if replies is not None else None
        self.prompts: list[str] = []
        self.requests: list[GenerationRequest] = []
        self.scored: list[str] = []
        self.score_calls = 0

    def count_tokens(self, prompts):
        return [len(str(p)) // 4 + 1 for p in prompts]

    def generate(self, requests):
        self.requests += requests
        self.prompts += [r.prompt for r in requests]
        if self.replies is not None:
            return [Generation(tuple(t), 10, 20, None, tuple(f)) for t, f in (self.replies.pop(0) for _ in requests)]
        if self.reply is None:
            raise AssertionError("this scripted engine has no replies")
        return [self.reply(r) for r in requests]

    def score_choices(self, prompts, choices):
        if self.scores is None:
            raise AssertionError("this scripted engine scores no labels")
        self.score_calls += 1
        self.scored += [str(p) for p in prompts]
        return [self.scores(str(p), choices) for p in prompts]
