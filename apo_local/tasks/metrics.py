"""Scoring: model answers -> labels / numbers, per-example rewards and aggregate metrics."""

from __future__ import annotations

import importlib
import math
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from apo_local.support.errors import ApoError
from apo_local.tasks.examples import first_line

BUILTIN_METRICS = ("accuracy", "f1", "macro_f1", "exact_match", "normalized_match", "numeric_match")

Predictions = Sequence[str | None]


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """A free-text answer -> the label it names (canonical spelling), or None.

    Case-insensitive, whole words: the label found earliest in the answer wins (so one at the start
    wins); at the same position the longer label wins ('No opinion' over 'No').
    """
    best = None  # (position, -length, label)
    for label in labels:
        match = re.search(rf"(?<!\w){re.escape(label.strip())}(?!\w)", text.strip(), re.IGNORECASE)
        if match and (best is None or (match.start(), -len(label)) < best[:2]):
            best = (match.start(), -len(label), label)
    return best[2] if best else None


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(text: str) -> float | None:
    """The last number in the text ('$1,234.5' -> 1234.5; 'I have 4 stoves and 8 instruments, so 8.' -> 8),
    or None. The last one, because an answer usually ends with it after any working."""
    match = next(reversed(list(_NUMBER.finditer(text))), None)
    return float(match.group().replace(",", "")) if match else None


def normalize_answer(text: str) -> str:
    """SQuAD-style: lowercase, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


@dataclass(frozen=True)
class Metric:
    """`name`'s value over a set of predictions, plus a per-example correctness reward for bandits."""

    name: str
    matches: Callable[[str, str], bool] = field(repr=False)  # one prediction vs its gold
    aggregate: Callable[[Predictions, Sequence[str]], float] | None = field(default=None, repr=False)  # None: mean
    parses: Callable[[str], bool] | None = field(default=None, repr=False)  # None: any text is an answer
    # metric judge: the Judge that grades its outputs (the scorer grades new outputs in batches through it)
    judge: Any = field(default=None, repr=False, compare=False)

    def example_score(self, prediction: str | None, gold: str) -> float:
        """Correctness in [0, 1]; an unparsed (None) prediction scores 0."""
        return 0.0 if prediction is None else float(self.matches(prediction, gold))

    def compute(self, predictions: Predictions, golds: Sequence[str]) -> dict[str, float]:
        """{name: value, "accuracy": mean example score, "n": count, "unparsed": predictions without an answer
        (None, or for numeric_match text without a number)}."""
        if len(predictions) != len(golds):
            raise ValueError(f"{len(predictions)} predictions for {len(golds)} golds")
        n = len(golds)
        accuracy = sum(map(self.example_score, predictions, golds)) / n if n else 0.0
        value = accuracy if self.aggregate is None or not n else self._aggregate(predictions, golds)
        unparsed = sum(p is None or (self.parses is not None and not self.parses(p)) for p in predictions)
        return {self.name: value, "accuracy": accuracy, "n": n, "unparsed": unparsed}

    def _aggregate(self, predictions: Predictions, golds: Sequence[str]) -> float:
        try:
            return float(self.aggregate(list(predictions), list(golds)))
        except Exception as e:  # custom metric code
            raise ApoError(f"metric '{self.name}' failed: {first_line(e)}") from None


def get_metric(name: str, *, positive_label: str | None = None, labels: Sequence[str] | None = None) -> Metric:
    """A built-in metric by name (see BUILTIN_METRICS), or a custom "module:function".

    f1 is the binary F1 of `positive_label`; macro_f1 averages per-label F1 over `labels` (labels absent
    from both golds and predictions are left out). A custom function(predictions, golds) -> float gets
    None for unparsed predictions; its per-example reward is exact match.
    """
    if name in ("accuracy", "exact_match"):
        return Metric(name, _exact)
    if name == "normalized_match":
        return Metric(name, lambda p, g: normalize_answer(p) == normalize_answer(g))
    if name == "numeric_match":
        return Metric(name, _numeric, parses=lambda p: parse_number(p) is not None)
    if name == "f1":
        if positive_label is None:
            raise ApoError("metric 'f1' needs positive_label (the label whose F1 is reported)")
        if labels is not None and positive_label not in labels:
            raise ApoError(f"positive_label {positive_label!r} is not one of {', '.join(labels)}")
        return Metric(name, _exact, lambda p, g: _f1(positive_label, p, g))
    if name == "macro_f1":
        return Metric(name, _exact, lambda p, g: _macro_f1(labels, p, g))
    if ":" in name:
        return Metric(name, _exact, _import(name))
    raise ApoError(f"unknown metric {name!r} (metrics: {', '.join(BUILTIN_METRICS)}; or module:function)")


def _exact(prediction: str, gold: str) -> bool:
    return prediction.strip() == gold.strip()


def _numeric(prediction: str, gold: str) -> bool:
    p, g = parse_number(prediction), parse_number(gold)
    return p is not None and g is not None and math.isclose(p, g, abs_tol=1e-6)


def _f1(label: str, predictions: Predictions, golds: Sequence[str]) -> float:
    tp = sum(p == label and g == label for p, g in zip(predictions, golds))
    fp = sum(p == label and g != label for p, g in zip(predictions, golds))
    fn = sum(p != label and g == label for p, g in zip(predictions, golds))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _macro_f1(labels: Sequence[str] | None, predictions: Predictions, golds: Sequence[str]) -> float:
    seen = set(golds) | {p for p in predictions if p is not None}
    present = [label for label in labels if label in seen] if labels is not None else sorted(seen)
    return sum(_f1(label, predictions, golds) for label in present) / len(present) if present else 0.0


BALANCED_METRICS = ("f1", "macro_f1")


def selection_weights(metric_name: str, golds: Sequence[str]) -> dict[str, float] | None:
    """Per-label reward weights that make the selection's per-example reward follow an F1-type metric.

    For f1 and macro_f1 a correct answer on an example of label y is worth ``n / (K * n_y)`` (K labels
    present, n_y examples of label y), so an arm's mean reward estimates balanced accuracy (the mean
    recall over labels): a prompt that always answers one label scores exactly 1/K, whatever the
    prevalence, instead of the majority share. None (plain correctness) for every other metric and for
    fewer than two labels.
    """
    if metric_name not in BALANCED_METRICS:
        return None
    counts: dict[str, int] = {}
    for g in golds:
        counts[g] = counts.get(g, 0) + 1
    if len(counts) < 2:
        return None
    return {label: len(golds) / (len(counts) * c) for label, c in counts.items()}


def balanced_accuracy(rows: Sequence[tuple[str | None, str]]) -> float:
    """Mean recall over the gold labels present in ``rows`` ((prediction, gold) pairs): what the selection's
    class-balanced reward (``selection_weights``) estimates. A constant answer scores 1/K, whatever the
    prevalence, so a metric that rises by shifting toward one label does not move it."""
    if not rows:
        return math.nan
    hits: dict[str, list[int]] = {}
    for p, g in rows:
        hits.setdefault(g, []).append(p == g)
    return sum(sum(h) / len(h) for h in hits.values()) / len(hits)


def metric_value(metric: Metric, rows: Sequence[tuple[str | None, str]]) -> float:
    """The metric over (prediction, gold) rows (the statistic the bootstrap recomputes per resample)."""
    if not rows:
        return math.nan
    return metric.compute([p for p, _ in rows], [g for _, g in rows])[metric.name]


def _import(spec: str) -> Callable:
    module_name, _, function_name = spec.rpartition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ApoError(f"metric {spec!r}: cannot import module '{module_name}' ({first_line(e)})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ApoError(f"metric {spec!r}: module '{module_name}' has no function '{function_name}'")
    return function
