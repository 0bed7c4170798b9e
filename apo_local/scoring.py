"""Scoring: many candidate instructions x many examples, in one engine batch.

Classification uses label log-probabilities (``score_choices``: one forward pass, no sampling,
prediction = argmax; with ``calibration`` the argmax of each label's log-prob minus the prompt's offset for it,
see ``calibration.py``). ``mode="generate"`` instead samples a short greedy answer and parses the
label from it (the pattern most other tools use; kept for comparison and generative tasks), read as
``answer`` says (``tasks/answers.py``: the label named first, the ProTeGi reference's positive-prefix
reading, or an explicit final ``Answer:`` line after worked steps, where a reply cut at ``max_tokens`` is
unparsed and counted as an ``answer_truncated`` fault).
Identical (instruction, example) pairs are scored once per scorer and remembered across rounds.

Host cost per prompt is kept small: the task template is rendered once per instruction (around a
marker, when it copies the input verbatim) and each prompt is the instruction's head + the example's
input + the template's tail, handed to the engine as a ``SplitPrompt`` so the engine tokenizes each
head once; new pairs go to the engine in chunks of ``chunk`` prompts (bounded memory at 10^6
prompts); identical predictions share one object.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from apo_local import calibration as calib
from apo_local.engine import GenerationRequest
from apo_local.engine.batch_tokens import SplitPrompt
from apo_local.support.errors import ApoError
from apo_local.tasks import Example, Task
from apo_local.tasks.answers import answer_reader
from apo_local.tasks.judge import judge_of

log = logging.getLogger("apo_local")

SCORING_MODES = ("logprobs", "generate")


@dataclass(frozen=True)
class Prediction:
    label: str | None  # None: unparseable answer or prompt the engine could not take
    raw: str = ""  # generated text (generate mode) or "" (logprobs mode)
    error: str | None = None
    logprobs: tuple[float, ...] | None = None  # calibrated logprobs mode: each label's log-prob, in label order


@dataclass
class Evaluation:
    instruction: str
    metrics: dict[str, float]
    predictions: list[Prediction] = field(repr=False)
    predicted_distribution: dict[str, int] = field(default_factory=dict)
    true_distribution: dict[str, int] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # classification: true -> predicted -> count
    errors: int = 0
    calibration: dict | None = None  # calibrated scoring: method, inputs and per-label offsets of this prompt

    def to_dict(self) -> dict:
        return {
            "metrics": self.metrics,
            "predicted_distribution": self.predicted_distribution,
            "true_distribution": self.true_distribution,
            "confusion": self.confusion,
            "errors": self.errors,
            **({"calibration": self.calibration} if self.calibration else {}),
        }


def make_evaluation(
    task: Task, instruction: str, predictions: Sequence[Prediction], examples: Sequence[Example]
) -> Evaluation:
    """The metrics, distributions and confusion of ``predictions`` (one per example, in order)."""
    golds = [ex.label for ex in examples]
    labels = [p.label if p.label is not None else "<none>" for p in predictions]
    confusion: dict[str, dict[str, int]] = {}
    if task.kind == "classification":
        for gold, pred in zip(golds, labels):
            row = confusion.setdefault(gold, {})
            row[pred] = row.get(pred, 0) + 1
    return Evaluation(
        instruction=instruction,
        metrics=task.metric.compute([p.label for p in predictions], golds),
        predictions=list(predictions),
        predicted_distribution=dict(Counter(labels)),
        true_distribution=dict(Counter(golds)),
        confusion=confusion,
        errors=sum(p.error is not None for p in predictions),
    )


class Scorer:
    def __init__(
        self,
        task: Task,
        engine,
        mode: str = "logprobs",
        max_tokens: int = 8,
        dedupe: bool = True,
        chunk: int = 32_768,
        parse=None,
        answer: str = "label",
        calibration: str = "none",
    ):
        if mode not in SCORING_MODES:
            raise ApoError(f"unknown scoring mode {mode!r} (use {' or '.join(SCORING_MODES)})")
        if calibration not in calib.CALIBRATIONS:
            raise ApoError(f"scoring.calibration: unknown {calibration!r} (use {', '.join(calib.CALIBRATIONS)})")
        if mode == "logprobs" and task.kind != "classification":
            mode = "generate"  # free-text tasks have no label set to score
        self.task, self.engine, self.mode, self.max_tokens = task, engine, mode, max_tokens
        self.dedupe = dedupe  # False only to measure the one-request-per-pair pattern of other tools
        self.chunk = max(1, chunk)
        self.answer = answer  # generate mode: how a reply is read (tasks/answers.py)
        self.parse = parse or answer_reader(task, answer)  # generate mode: reply text -> answer
        self._memo: dict[tuple[str, str], Prediction] = {}
        self._shared: dict[str | None, Prediction] = {}  # logprobs mode: one object per label
        self._heads: dict[str, tuple[str, str] | None] = {}  # instruction -> template text around the input
        self.reward_weights: dict[str, float] | None = None  # per gold label; None: plain correctness
        self.calibration = calibration if self.mode == "logprobs" else "none"
        self._offsets: dict[str, tuple[float, ...]] = {}  # instruction -> per-label offsets (calibration.py)
        self._calibration_rows: list[Example] | None = None

    def predict(self, pairs: Sequence[tuple[str, Example]]) -> list[Prediction]:
        """Predictions for (instruction, example) pairs; new pairs go to the engine in as few calls as
        the chunk size allows (one for up to ``chunk`` prompts)."""
        if not self.dedupe:
            out: list[Prediction] = []
            for start in range(0, len(pairs), self.chunk):
                part = pairs[start : start + self.chunk]
                out += self._run([self.prompt(ins, ex) for ins, ex in part], [ins for ins, _ in part])
            return out
        memo = self._memo
        todo = list(dict.fromkeys((ins, ex.id) for ins, ex in pairs if (ins, ex.id) not in memo))
        if todo:
            by_id = {ex.id: ex for _, ex in pairs}
            for start in range(0, len(todo), self.chunk):
                part = todo[start : start + self.chunk]
                memo.update(
                    zip(part, self._run([self.prompt(ins, by_id[eid]) for ins, eid in part], [ins for ins, _ in part]))
                )
        out = [memo[(ins, ex.id)] for ins, ex in pairs]
        if judge := judge_of(self.task):  # metric judge: every output graded against its reference, one judge batch
            judge.grade([(p.label, ex.label) for p, (_, ex) in zip(out, pairs)])
        return out

    def prompt(self, instruction: str, example: Example) -> str:
        """``task.render(instruction, example)``, as a ``SplitPrompt`` (instruction head + example tail)
        when the template copies the input verbatim and the length limit leaves the prompt as it is."""
        if instruction not in self._heads:
            if len(self._heads) > 4096:
                self._heads.clear()
            self._heads[instruction] = _around_input(self.task, instruction)
        around = self._heads[instruction]
        if around is None:
            return self.task.render(instruction, example)
        head, after = around
        text = head + example.input + after
        length = self.task.length_limit
        if length is not None:
            fitted = length.fit(self.task, instruction, example, text)  # what task.render would return
            if fitted != text:
                return fitted
        return SplitPrompt(head, example.input + after)

    def export_memo(self) -> dict:
        """Every prediction made so far (checkpointed, so a resumed run asks the engine exactly what an
        uninterrupted one would)."""
        memo: dict[str, dict[str, list]] = {}
        for (ins, eid), p in self._memo.items():
            memo.setdefault(ins, {})[eid] = [p.label, p.raw, p.error] + ([list(p.logprobs)] if p.logprobs else [])
        return memo

    def import_memo(self, memo: dict) -> None:
        self._memo = {
            (ins, eid): Prediction(*p[:3], logprobs=tuple(p[3]) if len(p) > 3 else None)
            for ins, rows in memo.items()
            for eid, p in rows.items()
        }

    def rewards(self, pairs: Sequence[tuple[str, Example]]) -> list[float]:
        """Per-example selection rewards: correctness, times the label's weight when ``reward_weights`` is
        set (class-balanced for F1-type metrics, see ``tasks.metrics.selection_weights``)."""
        preds = self.predict(pairs)
        w = self.reward_weights or {}
        return [
            self.task.metric.example_score(p.label, ex.label) * w.get(ex.label, 1.0) for p, (_, ex) in zip(preds, pairs)
        ]

    def evaluate_many(self, instructions: Sequence[str], examples: Sequence[Example]) -> list[Evaluation]:
        preds = self.predict([(ins, ex) for ins in instructions for ex in examples])
        n = len(examples)
        evals = [
            make_evaluation(self.task, ins, preds[k * n : (k + 1) * n], examples) for k, ins in enumerate(instructions)
        ]
        for e in evals if self.calibration != "none" else ():
            e.calibration = self.calibration_record(e.instruction)
        return evals

    # -- calibrated label scoring (calibration.py) --------------------------------------------------------------

    def calibration_record(self, instruction: str) -> dict:
        """What reproduces a calibrated prediction of ``instruction``: the method, how many inputs estimated the
        offsets, and each label's offset (prediction: the label with the highest log-prob minus its offset)."""
        offs = self.offsets([instruction])[instruction]
        return {
            "method": self.calibration,
            "inputs": len(self._calibration_examples()),
            "offsets": dict(zip(self.task.labels, offs)),
        }

    def offsets(self, instructions: Sequence[str]) -> dict[str, tuple[float, ...]]:
        """Per-label offsets of each instruction, estimated on its calibration inputs (new ones in one engine call)."""
        missing = [ins for ins in dict.fromkeys(instructions) if ins not in self._offsets]
        rows = self._calibration_examples()
        labels = self.task.labels
        step = max(1, self.chunk // max(1, len(rows)))  # instructions per engine call
        for start in range(0, len(missing), step):
            part = missing[start : start + step]
            scores = self.engine.score_choices([self.prompt(ins, ex) for ins in part for ex in rows], labels)
            for k, ins in enumerate(part):
                got = scores[k * len(rows) : (k + 1) * len(rows)]
                self._offsets[ins] = calib.offsets(
                    self.calibration, [s.logprobs for s in got if s.error is None], len(labels)
                )
        return {ins: self._offsets[ins] for ins in instructions}

    def _calibration_examples(self) -> list[Example]:
        if self._calibration_rows is None:
            train: list[str] = []
            if self.calibration == "batch":
                if "train" not in self.task.split_names:
                    raise ApoError(
                        f"scoring.calibration batch: task {self.task.name} has no train split to draw "
                        f"its {calib.CALIBRATION_ROWS} calibration inputs from (use content-free or none)"
                    )
                train = [ex.input for ex in self.task.split("train")]
            self._calibration_rows = [
                Example(id=f"calibration-{i}", input=text, label="")
                for i, text in enumerate(calib.calibration_inputs(self.calibration, train))
            ]
        return self._calibration_rows

    def evaluate(self, instruction: str, examples: Sequence[Example]) -> Evaluation:
        return self.evaluate_many([instruction], examples)[0]

    def _run(self, prompts: list[str], instructions: Sequence[str]) -> list[Prediction]:
        if self.mode == "logprobs" and self.calibration != "none":
            labels, offs = self.task.labels, self.offsets(instructions)
            return [
                Prediction(None, error=s.error)
                if s.error is not None
                else Prediction(
                    None if (i := calib.calibrated_choice(s.logprobs, offs[ins])) is None else labels[i],
                    logprobs=tuple(s.logprobs),
                )
                for s, ins in zip(self.engine.score_choices(prompts, labels), instructions)
            ]
        if self.mode == "logprobs":
            labels, shared = self.task.labels, self._shared
            out = []
            for s in self.engine.score_choices(prompts, labels):
                label = None if s.best is None else labels[s.best]
                if s.error is not None:
                    out.append(Prediction(label, error=s.error))
                else:
                    if label not in shared:
                        shared[label] = Prediction(label)
                    out.append(shared[label])
            return out
        gens = self.engine.generate(
            [GenerationRequest(p, temperature=0.0, max_tokens=self.max_tokens) for p in prompts]
        )
        return [
            self._cut(g)
            if self.answer == "final-line" and g.error is None and g.truncated(0)
            else Prediction(self.parse(g.text) if g.error is None else None, g.text, g.error)
            for g in gens
        ]

    def _cut(self, g) -> Prediction:
        """A worked reply cut at ``max_tokens`` before its answer line: unparsed, counted and logged (the trace's
        ``answer_truncated`` fault) even when a label word came before the cut."""
        why = f"reply cut at max_tokens ({self.max_tokens}) before its answer line"
        trace = getattr(self.engine, "trace", None)
        if trace is not None:
            trace.event("answer_truncated", reason=why, reply=g.text[-300:])
        return Prediction(None, g.text, why)


_INPUT_MARK = "\u2063\u2064apo-input\u2064\u2063"
_INPUT_PROBES = ("x", " two  spaces\n\n", "{{ x }} {% raw %}", "\nA\tB ")


def _around_input(task: Task, instruction: str) -> tuple[str, str] | None:
    """(text before, text after) the example input in ``instruction``'s prompts, when the template puts the
    input in verbatim, once (proven on probes); None otherwise (each prompt is rendered)."""
    try:
        text = task.template.render(instruction, _INPUT_MARK, task.labels)
        if text.count(_INPUT_MARK) != 1:
            return None
        head, after = text.split(_INPUT_MARK)
        if all(task.template.render(instruction, p, task.labels) == head + p + after for p in _INPUT_PROBES):
            return head, after
    except ApoError:
        pass
    return None


def prediction_records(task: Task, examples: Sequence[Example], evaluation: Evaluation) -> list[dict]:
    """One record per example: input id, the model's output (generated text; in logprobs mode the label
    scored highest), the parsed answer (None: unparsed), the gold answer, whether it is correct."""
    return [
        {
            "id": ex.id,
            "output": p.raw if p.raw or p.label is None else p.label,
            "parsed": p.label,
            "gold": ex.label,
            "correct": task.metric.example_score(p.label, ex.label) >= 0.5,
            **({"score": round(task.metric.example_score(p.label, ex.label), 4)} if judge_of(task) else {}),
            **({"logprobs": dict(zip(task.labels, p.logprobs))} if p.logprobs else {}),
            **({"error": p.error} if p.error else {}),
        }
        for ex, p in zip(examples, evaluation.predictions)
    ]


def search_records(task: Task, scorer: Scorer) -> list[dict]:
    """Every output a scorer produced (generation tasks: the text behind each reward): prompt, example id,
    split, output, parsed answer, gold, score."""
    by_id = {ex.id: (name, ex) for name in task.split_names for ex in task.split(name)}
    out = []
    for (ins, eid), p in scorer._memo.items():
        split, ex = by_id.get(eid, (None, None))
        score = task.metric.example_score(p.label, ex.label) if ex is not None else None
        out.append(
            {
                "prompt": ins,
                "id": eid,
                "split": split,
                "output": p.raw,
                "parsed": p.label,
                "gold": ex.label if ex is not None else None,
                "score": score,
                **({"error": p.error} if p.error else {}),
            }
        )
    return out


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
    example inputs are cut in the middle, see ``tasks.length.LengthLimit``). Each cut is one log line naming
    the example (once per row), the token counts and the limit; every cut prompt is an ``example_truncated``
    event in ``trace``."""
    limit = engine.max_model_len - reserve
    logged: set[str] = set()

    def report(ex: Example, before: int, after: int) -> None:
        if ex.id not in logged:  # once per row (each prompt holding it is counted in the trace)
            logged.add(ex.id)
            log.warning(
                "example %s: input cut in the middle, prompt %d -> %d tokens (%d removed): the target "
                "model's context is %d tokens (max_model_len), %d kept for the answer",
                ex.id,
                before,
                after,
                before - after,
                engine.max_model_len,
                reserve,
            )
        if trace is not None:
            trace.event(
                "example_truncated",
                example=ex.id,
                tokens_before=before,
                tokens_after=after,
                max_model_len=engine.max_model_len,
            )

    task.limit_length(engine.count_tokens, limit, report)
