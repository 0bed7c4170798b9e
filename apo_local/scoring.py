"""Scoring: many candidate instructions x many examples, in one engine batch.

Classification uses label log-probabilities (``score_choices``: one forward pass, no sampling,
prediction = argmax). ``mode="generate"`` instead samples a short greedy answer and parses the
label from it (the pattern most other tools use; kept for comparison and generative tasks).
Identical (instruction, example) pairs are scored once per scorer and remembered across rounds.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from apo_local.engine import GenerationRequest
from apo_local.errors import ApoError
from apo_local.tasks import Example, Task

log = logging.getLogger("apo_local")

SCORING_MODES = ("logprobs", "generate")


@dataclass(frozen=True)
class Prediction:
    label: str | None  # None: unparseable answer or prompt the engine could not take
    raw: str = ""  # generated text (generate mode) or "" (logprobs mode)
    error: str | None = None


@dataclass
class Evaluation:
    instruction: str
    metrics: dict[str, float]
    predictions: list[Prediction] = field(repr=False)
    predicted_distribution: dict[str, int] = field(default_factory=dict)
    true_distribution: dict[str, int] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # classification: true -> predicted -> count
    errors: int = 0

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "predicted_distribution": self.predicted_distribution,
                "true_distribution": self.true_distribution, "confusion": self.confusion, "errors": self.errors}


class Scorer:
    def __init__(self, task: Task, engine, mode: str = "logprobs", max_tokens: int = 8, dedupe: bool = True,
                 parse=None):
        if mode not in SCORING_MODES:
            raise ApoError(f"unknown scoring mode {mode!r} (use {' or '.join(SCORING_MODES)})")
        if mode == "logprobs" and task.kind != "classification":
            mode = "generate"  # free-text tasks have no label set to score
        self.task, self.engine, self.mode, self.max_tokens = task, engine, mode, max_tokens
        self.dedupe = dedupe  # False only to measure the one-request-per-pair pattern of other tools
        self.parse = parse or task.parse_answer  # generate mode: reply text -> answer
        self._memo: dict[tuple[str, str], Prediction] = {}

    def predict(self, pairs: Sequence[tuple[str, Example]]) -> list[Prediction]:
        """Predictions for (instruction, example) pairs; all new pairs go to the engine in one call."""
        if not self.dedupe:
            return self._run([self.task.render(ins, ex) for ins, ex in pairs])
        todo = list(dict.fromkeys((ins, ex.id) for ins, ex in pairs if (ins, ex.id) not in self._memo))
        if todo:
            by_id = {ex.id: ex for _, ex in pairs}
            prompts = [self.task.render(ins, by_id[eid]) for ins, eid in todo]
            self._memo.update(zip(todo, self._run(prompts)))
        return [self._memo[(ins, ex.id)] for ins, ex in pairs]

    def export_memo(self) -> dict:
        """Every prediction made so far (checkpointed, so a resumed run asks the engine exactly what an
        uninterrupted one would)."""
        memo: dict[str, dict[str, list]] = {}
        for (ins, eid), p in self._memo.items():
            memo.setdefault(ins, {})[eid] = [p.label, p.raw, p.error]
        return memo

    def import_memo(self, memo: dict) -> None:
        self._memo = {(ins, eid): Prediction(*p) for ins, rows in memo.items() for eid, p in rows.items()}

    def rewards(self, pairs: Sequence[tuple[str, Example]]) -> list[float]:
        preds = self.predict(pairs)
        return [self.task.metric.example_score(p.label, ex.label) for p, (_, ex) in zip(preds, pairs)]

    def evaluate_many(self, instructions: Sequence[str], examples: Sequence[Example]) -> list[Evaluation]:
        preds = self.predict([(ins, ex) for ins in instructions for ex in examples])
        golds = [ex.label for ex in examples]
        out = []
        for k, ins in enumerate(instructions):
            chunk = preds[k * len(examples) : (k + 1) * len(examples)]
            labels = [p.label if p.label is not None else "<none>" for p in chunk]
            confusion: dict[str, dict[str, int]] = {}
            if self.task.kind == "classification":
                for gold, pred in zip(golds, labels):
                    row = confusion.setdefault(gold, {})
                    row[pred] = row.get(pred, 0) + 1
            out.append(
                Evaluation(
                    instruction=ins,
                    metrics=self.task.metric.compute([p.label for p in chunk], golds),
                    predictions=chunk,
                    predicted_distribution=dict(Counter(labels)),
                    true_distribution=dict(Counter(golds)),
                    confusion=confusion,
                    errors=sum(p.error is not None for p in chunk),
                )
            )
        return out

    def evaluate(self, instruction: str, examples: Sequence[Example]) -> Evaluation:
        return self.evaluate_many([instruction], examples)[0]

    def _run(self, prompts: list[str]) -> list[Prediction]:
        if self.mode == "logprobs":
            labels = self.task.labels
            return [
                Prediction(None if s.best is None else labels[s.best], error=s.error)
                for s in self.engine.score_choices(prompts, labels)
            ]
        gens = self.engine.generate([GenerationRequest(p, temperature=0.0, max_tokens=self.max_tokens) for p in prompts])
        return [Prediction(self.parse(g.text) if g.error is None else None, g.text, g.error) for g in gens]


def prediction_records(task: Task, examples: Sequence[Example], evaluation: Evaluation) -> list[dict]:
    """One record per example: input id, the model's output (generated text; in logprobs mode the label
    scored highest), the parsed answer (None: unparsed), the gold answer, whether it is correct."""
    return [
        {"id": ex.id, "output": p.raw if p.raw or p.label is None else p.label, "parsed": p.label, "gold": ex.label,
         "correct": bool(task.metric.example_score(p.label, ex.label)), **({"error": p.error} if p.error else {})}
        for ex, p in zip(examples, evaluation.predictions)
    ]


def write_predictions(path, records: list[dict]) -> None:
    """Prediction records as JSONL (user-only: they hold the data's labels)."""
    import json
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def limit_length(task: Task, engine, reserve: int, trace=None) -> None:
    """Fit every prompt of ``task`` into ``engine``'s context, ``reserve`` tokens left for the answer (over-long
    example inputs are cut in the middle, see ``tasks.task.LengthLimit``). Each cut is one log line naming
    the example (once per row), the token counts and the limit; every cut prompt is an ``example_truncated``
    event in ``trace``."""
    limit = engine.max_model_len - reserve
    logged: set[str] = set()

    def report(ex: Example, before: int, after: int) -> None:
        if ex.id not in logged:  # once per row (each prompt holding it is counted in the trace)
            logged.add(ex.id)
            log.warning("example %s: input cut in the middle, prompt %d -> %d tokens (%d removed): the target "
                        "model's context is %d tokens (max_model_len), %d kept for the answer",
                        ex.id, before, after, before - after, engine.max_model_len, reserve)
        if trace is not None:
            trace.event("example_truncated", example=ex.id, tokens_before=before, tokens_after=after,
                        max_model_len=engine.max_model_len)

    task.limit_length(engine.count_tokens, limit, report)
