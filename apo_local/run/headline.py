"""The headline numbers of a run, each with its uncertainty: a test score with its bootstrap interval, the
paired comparison of the selected prompt against the initial one (and against the best constant answer) on
the same test rows, the smallest difference the test split can detect, the labels a prompt predicts far
below their true share, and the one plain-word headline sentence that says what all of it means."""

from __future__ import annotations

import math
from collections.abc import Sequence

from apo_local.stats import bootstrap_ci, examples_needed, fmt_diff, mcnemar, mean, paired_bootstrap
from apo_local.tasks import Example
from apo_local.tasks.metrics import BALANCED_METRICS, Metric, balanced_accuracy, metric_value

# A label counts as suppressed when its predicted share is below this fraction of its true share (and its
# true share is at least MIN_SHARE): the "prevalence hacking" failure, a metric such as F1 raised by
# predicting mostly one label.
SUPPRESSION_RATIO = 0.5
MIN_SHARE = 0.05
POWER_DELTA = 0.02  # the accuracy difference the power line asks about


class SplitStats:
    """Statistics of evaluations on one set of test rows (the same rows for every prompt: paired)."""

    def __init__(self, metric: Metric, rows: Sequence[Example]):
        self.metric, self.golds = metric, [ex.label for ex in rows]

    def _rows(self, evaluation) -> list[tuple]:
        return list(zip([p.label for p in evaluation.predictions], self.golds))

    def _correct(self, evaluation) -> list[float]:
        return [self.metric.example_score(p, g) for p, g in self._rows(evaluation)]

    def _statistic(self, rows):
        return metric_value(self.metric, rows)

    @property
    def balanced(self) -> bool:
        """F1-type metrics: the selection's reward is balanced accuracy, reported beside the metric."""
        return self.metric.name in BALANCED_METRICS

    def summary(self, evaluation) -> dict:
        """``Evaluation.to_dict()`` plus ``ci``: the 95% bootstrap interval of the metric and of accuracy (and for
        F1-type metrics balanced accuracy, the selection's reward, with its interval)."""
        d = evaluation.to_dict()
        d["ci"] = {self.metric.name: list(bootstrap_ci(self._rows(evaluation), self._statistic))}
        if self.metric.name != "accuracy":
            d["ci"]["accuracy"] = list(bootstrap_ci(self._correct(evaluation), mean))
        if self.balanced:
            rows = self._rows(evaluation)
            d["metrics"] = {**d["metrics"], "balanced_accuracy": balanced_accuracy(rows)}
            d["ci"]["balanced_accuracy"] = list(bootstrap_ci(rows, balanced_accuracy))
        return d

    def paired(self, a, b) -> dict:
        """``a`` minus ``b`` on the same rows: the metric's and accuracy's difference with paired bootstrap
        intervals (for F1-type metrics balanced accuracy's too: the selection's reward, which a shift toward
        one label does not raise), the exact McNemar test, and the power line's figures."""
        ca, cb = self._correct(a), self._correct(b)
        if self.metric.aggregate is None:  # a mean of per-row scores: the same interval, vectorized
            out = {"n": len(self.golds), self.metric.name: paired_bootstrap(ca, cb, mean)}
        else:
            out = {
                "n": len(self.golds),
                self.metric.name: paired_bootstrap(self._rows(a), self._rows(b), self._statistic),
            }
        if self.metric.name != "accuracy":
            out["accuracy"] = paired_bootstrap(ca, cb, mean)
        if self.balanced:
            out["balanced_accuracy"] = paired_bootstrap(self._rows(a), self._rows(b), balanced_accuracy)
        out["mcnemar"] = mcnemar(ca, cb)
        n = len(self.golds)
        discordant = (out["mcnemar"]["only_a"] + out["mcnemar"]["only_b"]) / n if n else 0.0
        out["power"] = power(n, discordant)
        return out


def power(n: int, discordant: float) -> dict:
    """The smallest accuracy difference ``n`` paired rows detect (two-sided 5%, 80% power) at this share of
    discordant rows, and the rows a ``POWER_DELTA`` difference needs."""
    d = max(discordant, 0.1)  # too few disagreements observed: assume the two prompts differ on 10% of rows
    lo, hi = 1e-4, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if examples_needed(mid, d) <= n else (mid, hi)
    return {
        "discordant": round(discordant, 4),
        "assumed_discordant": round(d, 4),
        "detectable_accuracy_difference": round(hi, 4) if n else None,
        "delta": POWER_DELTA,
        "examples_needed": examples_needed(POWER_DELTA, d),
    }


def power_line(p: dict, n: int) -> str:
    return (
        f"power: with {n} test rows (prompts disagree on {p['discordant']:.0%} of them) the smallest accuracy "
        f"difference detectable (80% power, 5% level) is {p['detectable_accuracy_difference']:.3f}; "
        f"a {p['delta']} difference needs about {p['examples_needed']} rows"
    )


def suppressed_labels(test: dict) -> list[tuple[str, float, float]]:
    """(label, predicted share, true share) for labels predicted far below their true share."""
    true, pred = test.get("true_distribution") or {}, test.get("predicted_distribution") or {}
    n = sum(true.values())
    out = []
    for label, count in true.items():
        share_t, share_p = count / n, pred.get(label, 0) / n
        if share_t >= MIN_SHARE and share_p < SUPPRESSION_RATIO * share_t:
            out.append((label, share_p, share_t))
    return out


def _only_answer(test: dict) -> str | None:
    """The one label a prompt predicted on every test row, else None."""
    pred = {k: v for k, v in (test.get("predicted_distribution") or {}).items() if v}
    n = sum((test.get("true_distribution") or {}).values())
    return next(iter(pred)) if len(pred) == 1 and n and pred[next(iter(pred))] == n else None


def is_nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _above_zero(d: dict | None) -> bool:
    return bool(d) and not is_nan(d["ci"][0]) and d["ci"][0] > 0


def _below_zero(d: dict | None) -> bool:
    return bool(d) and not is_nan(d["ci"][1]) and d["ci"][1] < 0


def _relation(value: float, bar: float) -> str:
    """Which way two scores point, as printed (3 decimals): equal when they print alike."""
    value, bar = round(value, 3), round(bar, 3)
    return "scores above" if value > bar else "scores below" if value < bar else "scores the same as"


def _rejections(replies: dict) -> str:
    rejected = ", ".join(f"{rule} {n}" for rule, n in (replies.get("rejected") or {}).items())
    return f" ({rejected})" if rejected else ""


def kept_reason(result: dict) -> str:
    """Why the search ended on the initial prompt: no proposal survived (with the rejection counts of
    ``replies``), no final beam prompt beat it on the validation rows (only where that comparison happened), or
    the final pick that chose it."""
    replies = result.get("replies") or {}
    if replies and not replies.get("accepted"):
        proposals = replies.get("proposals", 0)
        if proposals:
            return (
                f"no proposal survived: all {proposals} proposal{'s' * (proposals != 1)} were rejected"
                f"{_rejections(replies)}"
            )
        n = replies.get("replies", 0)
        return (
            f"no proposal survived: the optimizer's {n} repl{'ies' if n != 1 else 'y'} gave no candidate prompt"
            if n
            else "no proposal survived: the optimizer made no proposal"
        )
    selected_by = result.get("selected_by") or ""
    if result.get("initial_validation") is not None or selected_by.startswith("validation"):
        return "no final beam prompt beat it on the validation rows"
    return f"the final pick ({selected_by}) chose it" if selected_by else "no other prompt was selected"


def headline(result: dict) -> str:
    """One plain-word sentence for what the run's test numbers mean (``results.json``: ``headline``).

    A change counts only when its paired 95% interval excludes zero. The selected prompt must also beat the
    best constant answer on the same rows (its paired interval above zero), else the sentence says it does
    not, whatever the difference to the initial prompt: a metric raised by answering one label more often
    is not a gain. When the interval against the constant reaches zero without being below it, the sentence
    says which way the scores point and that these test rows cannot tell the two apart (not "does not beat",
    which reads as "scores lower"); when the prompt gave that constant's label on every row, it says so. For F1-type metrics a rise of the metric without a rise of balanced
    accuracy (the selection's reward) is named as such. When the search kept the initial prompt, the sentence
    says why (``kept_reason``)."""
    m = result["metric"]
    vs_initial = (result.get("selected_vs_initial") or {}).get(m)
    constant = result.get("constant_baselines") or {}
    label = constant.get("best")
    vs_constant = (result.get("selected_vs_constant") or {}).get(m)
    kept = result.get("selected_prompt") == result.get("initial_prompt")
    why = f"; the search kept the initial prompt: {kept_reason(result)}" if kept else ""
    if label is not None and vs_constant and not _above_zero(vs_constant):
        value = result["selected_test"]["metrics"][m]
        bar = constant["by_label"][label]["metrics"][m]
        subject = "the initial prompt (kept by the search)" if kept else "the selected prompt"
        n = (result.get("selected_vs_constant") or {}).get("n") or vs_constant.get("n")
        rows = f"these {n} test rows" if n else "these test rows"
        if _only_answer(result["selected_test"]) == label:
            return (
                f"headline: no gain over a constant answer: {subject} answers {label!r} on every one of {rows}, "
                f"so it is that constant answer ({m} {value:.3f}){why}"
            )
        if _below_zero(vs_constant):
            return (
                f"headline: no gain over a constant answer: {subject} scores below always answering {label!r} on "
                f"{rows} ({m} {value:.3f} vs {bar:.3f}; difference {fmt_diff(vs_constant)}){why}"
            )
        return (
            f"headline: no gain shown over a constant answer: {subject} {_relation(value, bar)} always answering "
            f"{label!r} ({m} {value:.3f} vs {bar:.3f}), but {rows} cannot tell them apart: difference "
            f"{fmt_diff(vs_constant)}{why}"
        )
    beats = f"; it beats always answering {label!r} ({m} {fmt_diff(vs_constant)})" if label is not None else ""
    if kept:
        return f"headline: the search kept the initial prompt: {kept_reason(result)}{beats}"
    if not vs_initial:
        return "headline: no paired comparison with the initial prompt"
    balanced = (result.get("selected_vs_initial") or {}).get("balanced_accuracy")
    if _above_zero(vs_initial):
        if balanced and not _above_zero(balanced):
            return (
                f"headline: {m} rose ({fmt_diff(vs_initial)}) but balanced accuracy did not "
                f"({fmt_diff(balanced)}): the rise may come from answering one label more often, not from a "
                f"better classifier{beats}"
            )
        return f"headline: better than the initial prompt ({m} {fmt_diff(vs_initial)}){beats}"
    if _below_zero(vs_initial):
        return f"headline: worse than the initial prompt ({m} {fmt_diff(vs_initial)}){beats}"
    return (
        f"headline: no detectable change from the initial prompt ({m} {fmt_diff(vs_initial)}: the interval "
        f"includes zero){beats}"
    )
