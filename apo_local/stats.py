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
* ``t_interval(values)``, ``t_critical(df)``: Student t over a handful of values (one per seed), exact for
  integer degrees of freedom; ``seeds_needed(delta, sd)``: the seeds a t test needs.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

CONFIDENCE = 0.95
RESAMPLES = 1000
SEED = 20230503  # fixed: the same rows give the same interval on every run

Statistic = Callable[[Sequence[Any]], float]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def percentile_interval(samples: list[float], confidence: float) -> tuple[float, float]:
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


@functools.lru_cache(maxsize=16)
def resample_indices(n: int, resamples: int, seed: int):
    """``resamples`` lists of ``n`` row indices drawn with replacement (seeded; the same array for the same
    arguments, read-only)."""
    import numpy as np  # a dependency of datasets and transformers

    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    idx.setflags(write=False)
    return idx


def _resampled(rows: list, statistic: Statistic, idx) -> list[float]:
    if statistic is mean:  # the common case, vectorized
        import numpy as np

        return np.asarray(rows, dtype=float)[idx].mean(axis=1).tolist()
    return [statistic([rows[i] for i in one]) for one in idx.tolist()]


def bootstrap_ci(
    rows: Sequence[Any],
    statistic: Statistic = mean,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(rows)`` over resampled rows; (nan, nan) for no rows."""
    rows = list(rows)
    if not rows:
        return math.nan, math.nan
    return percentile_interval(_resampled(rows, statistic, resample_indices(len(rows), resamples, seed)), confidence)


def paired_bootstrap(
    a: Sequence[Any],
    b: Sequence[Any],
    statistic: Statistic = mean,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> dict:
    """``statistic(a) - statistic(b)`` with its paired bootstrap interval (row i of ``a`` and of ``b`` are the
    same example) and the share of resamples where the difference is <= 0 / >= 0 (a two-sided p-value)."""
    if len(a) != len(b):
        raise ValueError(f"paired rows differ in length: {len(a)} vs {len(b)}")
    a, b = list(a), list(b)
    if not a:
        return {"diff": math.nan, "ci": [math.nan, math.nan], "p": math.nan, "n": 0}
    idx = resample_indices(len(a), resamples, seed)
    if statistic is mean:  # the common case, vectorized (the same numbers)
        import numpy as np

        d = np.asarray(a, dtype=float)[idx].mean(axis=1) - np.asarray(b, dtype=float)[idx].mean(axis=1)
        diffs = d.tolist()
        below, above = float(np.mean(d <= 0)), float(np.mean(d >= 0))
    else:
        diffs = [x - y for x, y in zip(_resampled(a, statistic, idx), _resampled(b, statistic, idx))]
        below = sum(d <= 0 for d in diffs) / len(diffs)
        above = sum(d >= 0 for d in diffs) / len(diffs)
    lo, hi = percentile_interval(diffs, confidence)
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
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"only_a": only_a, "only_b": only_b, "p": min(1.0, 2 * tail)}


Z_ALPHA, Z_POWER = 1.959964, 0.841621  # two-sided 5% level, 80% power


def examples_needed(delta: float, discordant: float) -> int:
    """Rows a paired accuracy comparison needs to detect a difference ``delta`` (two-sided 5%, power 80%),
    given the share of rows on which the two prompts disagree (Connor 1987, McNemar sample size)."""
    if delta <= 0:
        raise ValueError("delta must be > 0")
    discordant = max(discordant, delta)  # at least the difference itself must be discordant
    n = (Z_ALPHA * math.sqrt(discordant) + Z_POWER * math.sqrt(discordant - delta**2)) ** 2 / delta**2
    return math.ceil(n)


def t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (an integer >= 1) degrees of freedom: the closed form of
    Abramowitz & Stegun 26.7.3-4 (exact, no table, no scipy)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be an integer >= 1, got {df!r}")
    df = int(df)
    if t <= 0:
        return 0.0
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 3) // 2 + 1):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return min(1.0, 2 / math.pi * (theta + s * math.cos(theta) * total))
    term, total = 1.0, 1.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return min(1.0, s * total)


@functools.cache
def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """The value c with P(|T| <= c) = ``confidence`` for Student's t with ``df`` degrees of freedom (2.776 for
    df 4 at 95%; the 80th percentile, a power term, is ``t_critical(df, 0.6)``)."""
    lo, hi = 0.0, 1.0
    while t_two_sided(hi, df) < confidence:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean of ``values`` (e.g. one figure per seed) with its Student t interval (df = n - 1) and the two-sided
    p-value of the one-sample t test against 0; the interval is (nan, nan) for fewer than two values."""
    values = [float(v) for v in values]
    n = len(values)
    m = mean(values)
    if n < 2:
        return {"mean": m, "ci": [math.nan, math.nan], "sd": math.nan, "df": 0, "t_critical": math.nan, "p": math.nan}
    sd = statistics.stdev(values)
    crit = t_critical(n - 1, confidence)
    half = crit * sd / math.sqrt(n)
    if sd == 0:
        p = 1.0 if m == 0 else 0.0
    else:
        p = 1 - t_two_sided(abs(m) / (sd / math.sqrt(n)), n - 1)
    return {"mean": m, "ci": [m - half, m + half], "sd": sd, "df": n - 1, "t_critical": crit, "p": p}


def seeds_needed(delta: float, sd: float, *, most: int = 10_000) -> int | None:
    """Seeds a one-sample t test of per-seed differences needs to detect a mean difference ``delta`` when they
    have standard deviation ``sd`` (two-sided 5%, 80% power): the smallest n with
    ``n >= ((t_crit(n-1) + t_0.8(n-1)) * sd / delta)^2`` (t quantiles, not z: a handful of seeds pays for
    the estimated spread); None when ``sd`` is unknown, ``most`` + 1 when even that many would not do."""
    if delta <= 0:
        raise ValueError("delta must be > 0")
    if sd is None or math.isnan(sd):
        return None
    if sd == 0:
        return 2
    for n in range(2, most + 1):
        if n >= ((t_critical(n - 1) + t_critical(n - 1, 0.6)) * sd / delta) ** 2:
            return n
    return most + 1


def fmt_diff(d: dict, digits: int = 3) -> str:
    """A paired difference ``{"diff", "ci"}``, signed: '+0.252 [+0.111, +0.399]' (just the value without an
    interval; '-' without a value)."""
    value, ci = d.get("diff"), d.get("ci")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value, ci = _no_negative_zero(value, digits), [_no_negative_zero(c, digits) for c in ci or []]
    if not ci or any(c is None or math.isnan(c) for c in ci):
        return f"{value:+.{digits}f}"
    return f"{value:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def _no_negative_zero(x, digits: int):
    """0.0 for a value that prints as zero ("+0.000", never "-0.000")."""
    return 0.0 if isinstance(x, (int, float)) and not math.isnan(x) and abs(x) < 0.5 * 10**-digits else x


def fmt_ci(value: float | None, ci: Sequence[float] | None, digits: int = 3) -> str:
    """'0.612 [0.571, 0.650]' (or just the value when there is no interval)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not ci or any(c is None or math.isnan(c) for c in ci):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
