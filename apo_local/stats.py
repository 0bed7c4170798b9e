"""Statistics over examples: a confidence interval on a test score, a paired comparison of two prompts on
the same test rows, and the size a comparison needs to detect a given difference.

Everything resamples **examples** (the test rows), with a seeded generator, so the figures are the same on
every run. A metric that is not a mean of per-example scores (F1, macro-F1) is recomputed on every bootstrap
resample, so its interval is the interval of that metric, not of accuracy.

* ``bootstrap_ci(values, statistic)``: percentile interval of ``statistic`` over resampled rows.
* ``paired_bootstrap(a, b, statistic)``: the interval of ``statistic(a) - statistic(b)``, both prompts
  resampled on the *same* rows (the paired design: the rows' difficulty cancels).
* ``mcnemar(a_correct, b_correct)``: exact two-sided McNemar test on the discordant pairs (accuracy-type
  metrics: which rows one prompt gets right and the other wrong).
* ``examples_needed(delta, discordant)``: rows a paired accuracy comparison needs to detect ``delta``
  (two-sided 5% level, 80% power), from the share of discordant rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

CONFIDENCE = 0.95
RESAMPLES = 1000
SEED = 20230503  # fixed: the same rows give the same interval on every run

Statistic = Callable[[Sequence[Any]], float]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _percentiles(samples: list[float], confidence: float) -> tuple[float, float]:
    samples = sorted(s for s in samples if not math.isnan(s))
    if not samples:
        return math.nan, math.nan
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2

    def at(q: float) -> float:
        pos = q * (len(samples) - 1)
        i = int(math.floor(pos))
        j = min(i + 1, len(samples) - 1)
        return samples[i] + (samples[j] - samples[i]) * (pos - i)

    return at(lo_q), at(hi_q)


def _indices(n: int, resamples: int, seed: int):
    """``resamples`` lists of ``n`` row indices drawn with replacement (seeded)."""
    import numpy as np  # a dependency of datasets and transformers

    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _resampled(rows: list, statistic: Statistic, idx) -> list[float]:
    if statistic is mean:  # the common case, vectorized
        import numpy as np

        return np.asarray(rows, dtype=float)[idx].mean(axis=1).tolist()
    return [statistic([rows[i] for i in one]) for one in idx.tolist()]


def bootstrap_ci(rows: Sequence[Any], statistic: Statistic = mean, *, resamples: int = RESAMPLES,
                 confidence: float = CONFIDENCE, seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(rows)`` over resampled rows; (nan, nan) for no rows."""
    rows = list(rows)
    if not rows:
        return math.nan, math.nan
    return _percentiles(_resampled(rows, statistic, _indices(len(rows), resamples, seed)), confidence)


def paired_bootstrap(a: Sequence[Any], b: Sequence[Any], statistic: Statistic = mean, *,
                     resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED) -> dict:
    """``statistic(a) - statistic(b)`` with its paired bootstrap interval (row i of ``a`` and of ``b`` are the
    same example) and the share of resamples where the difference is <= 0 / >= 0 (a two-sided p-value)."""
    if len(a) != len(b):
        raise ValueError(f"paired rows differ in length: {len(a)} vs {len(b)}")
    a, b = list(a), list(b)
    if not a:
        return {"diff": math.nan, "ci": [math.nan, math.nan], "p": math.nan, "n": 0}
    idx = _indices(len(a), resamples, seed)
    diffs = [x - y for x, y in zip(_resampled(a, statistic, idx), _resampled(b, statistic, idx))]
    lo, hi = _percentiles(diffs, confidence)
    below = sum(d <= 0 for d in diffs) / len(diffs)
    above = sum(d >= 0 for d in diffs) / len(diffs)
    return {"diff": statistic(a) - statistic(b), "ci": [lo, hi], "p": min(1.0, 2 * min(below, above)), "n": len(a)}


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """Exact two-sided McNemar test: ``b01`` rows only ``a`` gets right, ``b10`` rows only ``b`` gets right;
    under no difference each discordant row is a fair coin. p = 1 when there is no discordant row."""
    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired rows differ in length: {len(a_correct)} vs {len(b_correct)}")
    only_a = sum(bool(x) and not bool(y) for x, y in zip(a_correct, b_correct))
    only_b = sum(bool(y) and not bool(x) for x, y in zip(a_correct, b_correct))
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "p": 1.0}
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return {"only_a": only_a, "only_b": only_b, "p": min(1.0, 2 * tail)}


_Z_ALPHA, _Z_POWER = 1.959964, 0.841621  # two-sided 5% level, 80% power


def examples_needed(delta: float, discordant: float) -> int:
    """Rows a paired accuracy comparison needs to detect a difference ``delta`` (two-sided 5%, power 80%),
    given the share of rows on which the two prompts disagree (Connor 1987, McNemar sample size)."""
    if delta <= 0:
        raise ValueError("delta must be > 0")
    discordant = max(discordant, delta)  # at least the difference itself must be discordant
    n = (_Z_ALPHA * math.sqrt(discordant) + _Z_POWER * math.sqrt(discordant - delta ** 2)) ** 2 / delta ** 2
    return math.ceil(n)


def seeds_needed(delta: float, sd: float) -> int | None:
    """Paired seeds needed to detect a mean difference ``delta`` when per-seed differences have standard
    deviation ``sd`` (normal approximation, two-sided 5%, power 80%); None when ``sd`` is unknown."""
    if delta <= 0:
        raise ValueError("delta must be > 0")
    if sd is None or math.isnan(sd):
        return None
    return max(2, math.ceil(((_Z_ALPHA + _Z_POWER) * sd / delta) ** 2))


def fmt_diff(d: dict, digits: int = 3) -> str:
    """A paired difference ``{"diff", "ci"}``, signed: '+0.252 [+0.111, +0.399]' (just the value without an
    interval; '-' without a value)."""
    value, ci = d.get("diff"), d.get("ci")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not ci or any(c is None or math.isnan(c) for c in ci):
        return f"{value:+.{digits}f}"
    return f"{value:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def fmt_ci(value: float | None, ci: Sequence[float] | None, digits: int = 3) -> str:
    """'0.612 [0.571, 0.650]' (or just the value when there is no interval)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not ci or any(c is None or math.isnan(c) for c in ci):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
