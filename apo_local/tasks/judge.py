"""The ``judge`` metric: a local LLM grades a generated output against the reference, with a rubric.

A task sets ``metric: judge`` and ``judge: {rubric: FILE, model: ALIAS-or-FOLDER}`` (model unset: the run's
optimizer engine; in ``evaluate``, the evaluated model). Each (output, reference) pair is graded in
**one forward pass**: the judge's log-probabilities of its two grade labels ("Yes" / "No") after the
rubric, the reference and the output. The grade is the probability of "Yes", **calibrated** (contextual
calibration, Zhao et al. 2021): divided by the judge's prior on a content-free pair ("N/A" graded
against "N/A"), renormalised over the two labels. The per-example reward is that grade in [0, 1]; the
metric is its mean. A grade below one half is an error the optimizer may be shown, with the judge's
reason (one short greedy generation per shown error) added to the error block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from apo_local.support.errors import ApoError

GRADES = ("Yes", "No")
CONTENT_FREE = "N/A"
REASON_TOKENS = 48

_GRADE = """{rubric}

Reference answer: {reference}
Output to grade: {output}

Does the output meet the rubric when compared with the reference answer? Answer Yes or No."""

_REASON = """{rubric}

Reference answer: {reference}
Output to grade: {output}

In one sentence, say what is wrong with the output compared with the reference answer."""


class Judge:
    def __init__(self, rubric: str, model: str | None = None, source: str = "judge.rubric"):
        if not rubric.strip():
            raise ApoError(f"{source}: the rubric is empty")
        self.rubric, self.model = rubric.strip(), model
        self.engine = None  # attached when the run's engines start (``attach``)
        self._grades: dict[tuple[str, str], float] = {}
        self._prior: tuple[float, float] | None = None

    def attach(self, engine) -> None:
        self.engine = engine
        self._grades.clear()
        self._prior = None

    def _need_engine(self):
        if self.engine is None:
            raise ApoError("metric judge: no judge engine attached (judge.model, or the run's optimizer)")
        return self.engine

    def prompt(self, output: str, reference: str) -> str:
        """The grading prompt of one (output, reference) pair."""
        return _GRADE.format(rubric=self.rubric, reference=reference.strip(), output=output.strip())

    def reason_prompt(self, output: str, reference: str) -> str:
        """The prompt asking for the reason an output falls short of its reference."""
        return _REASON.format(rubric=self.rubric, reference=reference.strip(), output=output.strip())

    def _normalised(self, logprobs: Sequence[float]) -> tuple[float, float]:
        top = max(logprobs)
        if top == -math.inf:
            return 0.5, 0.5
        p = [math.exp(lp - top) for lp in logprobs]
        return p[0] / sum(p), p[1] / sum(p)

    def prior(self) -> tuple[float, float]:
        if self._prior is None:
            s = self._need_engine().score_choices([self.prompt(CONTENT_FREE, CONTENT_FREE)], GRADES)[0]
            self._prior = self._normalised(s.logprobs) if s.error is None else (0.5, 0.5)
        return self._prior

    def calibrated(self, logprobs: Sequence[float]) -> float:
        """P(Yes) divided by the content-free prior, renormalised over the two grades."""
        (yes, no), (q_yes, q_no) = self._normalised(logprobs), self.prior()
        a, b = yes / max(q_yes, 1e-6), no / max(q_no, 1e-6)
        return a / (a + b) if a + b > 0 else 0.5

    def grade(self, pairs: Sequence[tuple[str | None, str]]) -> list[float]:
        """Grades of (output, reference) pairs; new pairs go to the judge in one batch (None output: 0)."""
        todo = list(dict.fromkeys((o, r) for o, r in pairs if o is not None and (o, r) not in self._grades))
        if todo:
            self.prior()
            scores = self._need_engine().score_choices([self.prompt(o, r) for o, r in todo], GRADES)
            for pair, s in zip(todo, scores):
                self._grades[pair] = 0.0 if s.error is not None else self.calibrated(s.logprobs)
        return [0.0 if o is None else self._grades[(o, r)] for o, r in pairs]

    def score(self, output: str, reference: str) -> float:
        return self.grade([(output, reference)])[0]

    def reasons(self, pairs: Sequence[tuple[str | None, str]]) -> list[str]:
        """The judge's one-sentence reason per (output, reference) pair (greedy, seeded: cached and resumable)."""
        from apo_local.engine.protocol import GenerationRequest

        requests = [
            GenerationRequest(
                self.reason_prompt(o or "(no answer)", r), temperature=0.0, max_tokens=REASON_TOKENS, seed=0
            )
            for o, r in pairs
        ]
        out = self._need_engine().generate(requests)
        return [" ".join(g.text.split()) or "(no reason given)" for g in out]


def judge_metric(spec: dict | None, folder: Path, where: str):
    """The ``judge`` metric of a task: ``spec`` is the task's ``judge`` mapping (rubric file, model)."""
    from apo_local.tasks.examples import read_text
    from apo_local.tasks.metrics import Metric

    spec = spec or {}
    unknown = set(spec) - {"rubric", "model"}
    if unknown:
        raise ApoError(f"{where}: judge.{sorted(unknown)[0]}: unknown key (keys: rubric, model)")
    if not spec.get("rubric"):
        raise ApoError(f"{where}: metric judge needs judge.rubric (a rubric text file)")
    path = folder / str(spec["rubric"])
    if not path.is_file():
        raise ApoError(f"{where}: judge.rubric: file {path} does not exist")
    judge = Judge(read_text(path), spec.get("model"), f"{where}: judge.rubric")
    return Metric("judge", judge.score, judge=judge)


def judge_of(task) -> Judge | None:
    return task.metric.judge


def attach_judge(task, default_engine, trace=None) -> None:
    """Give a judged task its judge engine: ``judge.model`` loaded (role optimizer in the trace), else
    ``default_engine`` (the run's optimizer engine)."""
    judge = judge_of(task)
    if judge is None:
        return
    engine = default_engine
    if judge.model is not None:
        from apo_local.engine import EngineSettings, RoleEngine, Trace, load_engine

        engine = RoleEngine(
            load_engine(EngineSettings(model=judge.model), role="optimizer"), "optimizer", trace or Trace()
        )
    judge.attach(engine)


def agreement(grades: Sequence[float], matches: Sequence[bool]) -> dict:
    """How often the judge (grade >= 0.5 passes) agrees with a match metric on the same outputs:
    the agreement rate, Cohen's kappa (chance-corrected), and the confusion counts."""
    if len(grades) != len(matches) or not grades:
        raise ValueError("agreement needs one grade per match, at least one")
    judged = [g >= 0.5 for g in grades]
    n = len(judged)
    both = sum(j and m for j, m in zip(judged, matches))
    neither = sum(not j and not m for j, m in zip(judged, matches))
    observed = (both + neither) / n
    pj, pm = sum(judged) / n, sum(matches) / n
    chance = pj * pm + (1 - pj) * (1 - pm)
    kappa = (observed - chance) / (1 - chance) if chance < 1 else 1.0
    return {
        "n": n,
        "agreement": round(observed, 4),
        "kappa": round(kappa, 4),
        "judge_pass": sum(judged),
        "match_pass": sum(matches),
        "both_pass": both,
        "both_fail": neither,
        "judge_only": sum(j and not m for j, m in zip(judged, matches)),
        "match_only": sum(m and not j for j, m in zip(judged, matches)),
    }
