"""The scripted engine of the search-logic tests: deterministic replies (hash-based, in the shapes the meta-prompts
ask for) and hash-based label scores, so every shipped config runs three rounds in seconds, without a model.
``use_stand_in(monkeypatch)`` makes ``apo_local.run.optimize`` serve both roles from it."""

from __future__ import annotations

import hashlib

import apo_local.run.optimize as runner
from apo_local.engine import RoleEngine
from apo_local.engine.protocol import ChoiceScores, Generation
from tests.helpers.scripted import ScriptedEngine

WORDS = ["Decide", "carefully", "whether", "the", "statement", "is", "a", "lie", "using", "context", "facts"]


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


class StandIn(ScriptedEngine):
    """The shared scripted engine with the search-logic script: deterministic replies (tagged, untagged (fallback),
    doubly tagged; ABO steps, narrated work, judgements) and hash-based label scores."""

    model_id = "stand-in"

    def __init__(self):
        super().__init__(reply=self._generation, scores=self._scores)

    def _reply(self, prompt: str, seed, k: int) -> str:
        x = _h(prompt, seed, k)
        body = " ".join(WORDS[(x >> i) % len(WORDS)] for i in range(3 + x % 7))
        if "judge whether" in prompt:  # ABO's step-by-step judgement
            return "Step 1: yes\nStep 2: " + ("no" if x % 2 else "yes")
        if "Follow the steps above" in prompt:
            return "Step 1: read it\nStep 2: " + ("skip" if x % 3 == 0 else "compare") + "\nYes"
        if "steps" in prompt.lower() and x % 4:
            body = f"Follow these steps:\n1. {body}\n2. check {x % 13}\n\nDemonstration:\nStep 1: {body}"
        if x % 5 == 0:
            return body
        if x % 7 == 0:
            return f"<START>{body}<END>\n<START>{body} more<END>"
        return f"<START>{body}<END>"

    def _generation(self, r) -> Generation:
        texts = tuple(self._reply(r.prompt, r.seed, k) for k in range(r.n))
        return Generation(texts, len(r.prompt) // 4, sum(len(t) // 4 for t in texts))

    @staticmethod
    def _scores(p: str, choices) -> ChoiceScores:
        return ChoiceScores(tuple(-((_h(p, c) % 1000) / 100) for c in choices), len(p) // 4)


def serve_roles(monkeypatch, target, optimizer) -> None:
    """Every run in this test gets ``target`` and ``optimizer`` (engines) as its roles, recorded in the run's ledger
    and gated by its budget as ``optimize`` does with real engines."""
    monkeypatch.setattr(
        runner,
        "engines_for",
        lambda cfg, trace, budget=None: (
            RoleEngine(target, "target", trace, budget),
            RoleEngine(optimizer, "optimizer", trace, budget),
        ),
    )


def use_stand_in(monkeypatch) -> StandIn:
    """Both roles of every run in this test answered by one ``StandIn``."""
    engine = StandIn()
    serve_roles(monkeypatch, engine, engine)
    return engine
