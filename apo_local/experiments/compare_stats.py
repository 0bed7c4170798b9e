"""Per-example statistics of a comparison: every method's selected prompt against the baseline's on the same
test rows, with the seeds as a second level.

A run writes the selected prompt's prediction per test row (``predictions/test-selected.jsonl``, or
``test-best.jsonl`` when the two prompts are the same). For a method and the baseline with the same seed the
rows are the same examples, so the comparison is paired twice: by seed and by example. Every seed scores the
same test rows, so the seeds are the independent units of a claim about the *method*; the rows of one seed
speak only of the two prompts that seed produced.

* **Over seeds**: the per-seed differences (method minus baseline, each on that seed's rows) with a Student t
  interval, df = seeds - 1 (``seed_ci``). Resampling 3-5 seeds with replacement (a bootstrap over seeds) gives
  intervals far too narrow; t does not.
* **Over rows**: a paired bootstrap of the mean difference with the seeds fixed and the test rows resampled
  jointly across seeds (``rows_ci``), and per seed (``per_seed_ci``: these two prompts on these rows).
* ``ci``, the interval the verdict reads, is the wider of the two on each side: a change is called one only
  when the seeds (t) and the rows (bootstrap) both exclude zero, so neither a consistent difference on too few
  rows nor a large difference in too few seeds is called a change. With one seed there is no interval over
  seeds: the verdict is "not established" (one seed speaks of two prompts, not of two methods).
* McNemar (exact) per seed (``mcnemar``: rows only the method gets right vs rows only the baseline gets right,
  for that seed's pair of prompts); it speaks of accuracy.
* The power line: the smallest accuracy difference the test rows (distinct rows, not rows x seeds) can detect
  for one pair of prompts, and the rows a 0.02 difference needs, from the mean share of discordant rows.
* Each method's test score gets the same two-part interval (t over seeds, widened by the rows' bootstrap).
* The verdict: better / worse / no detectable change / not established, and for no detectable change what
  detection would need: more seeds (t-based, from the per-seed spread) and, when the spread within a seed
  (rows) rather than between seeds dominates, more test rows per seed.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from apo_local.run.headline import power
from apo_local.stats import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    Z_ALPHA,
    Z_POWER,
    fmt_diff,
    mcnemar,
    percentile_interval,
    resample_indices,
    seeds_needed,
    t_critical,
    t_interval,
)
from apo_local.tasks.metrics import Metric, metric_value

Rows = list[tuple]  # (parsed prediction, gold) per test row


def selected_rows(cell: Path) -> dict[str, tuple]:
    """Test row id -> (parsed, gold) for the prompt the run selected ({} when the file is missing)."""
    name = "test-selected.jsonl" if (cell / "predictions" / "test-selected.jsonl").is_file() else "test-best.jsonl"
    return prediction_rows(cell / "predictions" / name)


def prediction_rows(path: Path) -> dict[str, tuple]:
    """Test row id -> (parsed, gold) of one predictions file ({} when it is missing)."""
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: (r["parsed"], r["gold"]) for r in records}


def _hull(a: list[float], b: list[float]) -> list[float]:
    """The wider bound of each side of two intervals (a side that is nan in one takes the other)."""

    def pick(x, y, f):
        return y if math.isnan(x) else x if math.isnan(y) else f(x, y)

    return [pick(a[0], b[0], min), pick(a[1], b[1], max)]


def _row_samples(metric: Metric, seeds: list[dict], resamples: int, seed: int) -> list[list[float]]:
    """Per resample, per seed: the metric's value on that seed's resampled rows (``seeds``: row id -> value, a
    value being a (parsed, gold) row or, for a difference, a pair of rows). The row ids are resampled jointly:
    the same drawn ids for every seed (the seeds share their test rows)."""
    import numpy as np

    ids = list(dict.fromkeys(i for s in seeds for i in s))
    idx = resample_indices(len(ids), resamples, seed)
    counts = np.stack([np.bincount(one, minlength=len(ids)) for one in idx])  # resamples x ids
    if metric.aggregate is None:  # a mean of per-row scores: weighted means, vectorized
        out = []
        for s in seeds:
            present = np.array([i in s for i in ids], dtype=float)
            score = np.array([_row_score(metric, s[i]) if i in s else 0.0 for i in ids])
            weight = counts @ present
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append((counts @ (score * present)) / weight)
        return np.stack(out, axis=1).tolist()
    samples = []
    for one in counts.tolist():
        per = []
        for s in seeds:
            drawn = [s[i] for i, c in zip(ids, one) if i in s for _ in range(c)]
            per.append(_row_value(metric, drawn) if drawn else math.nan)
        samples.append(per)
    return samples


def _row_score(metric: Metric, value) -> float:
    if isinstance(value[0], tuple):  # a pair of rows: the method's score minus the baseline's
        return metric.example_score(*value[0]) - metric.example_score(*value[1])
    return metric.example_score(*value)


def _row_value(metric: Metric, drawn: list) -> float:
    if isinstance(drawn[0][0], tuple):
        return metric_value(metric, [a for a, _ in drawn]) - metric_value(metric, [b for _, b in drawn])
    return metric_value(metric, drawn)


def score_ci(metric: Metric, per_seed: list[dict], *, resamples: int = RESAMPLES) -> list[float]:
    """Interval of the mean over seeds of the metric (per seed: row id -> (parsed, gold)): the Student t
    interval over the per-seed scores (df = seeds - 1), widened on each side to the rows' bootstrap (seeds
    fixed, rows resampled jointly); one seed: the rows' bootstrap."""
    seeds = [s for s in per_seed if s]
    if not seeds:
        return [math.nan, math.nan]
    samples = _row_samples(metric, seeds, resamples, SEED)
    rows = list(percentile_interval([statistics.fmean(s) for s in samples], CONFIDENCE))
    scores = [metric_value(metric, list(s.values())) for s in seeds]
    return _hull(t_interval(scores)["ci"], rows)


def paired(metric: Metric, method: list[dict], baseline: list[dict], *, resamples: int = RESAMPLES) -> dict | None:
    """The method minus the baseline (per seed: row id -> (parsed, gold), aligned by seed); None without rows.

    ``diff``: the mean over seeds of the per-seed differences; ``seed_ci`` (t over seeds), ``rows_ci`` (rows
    bootstrap, seeds fixed), ``ci`` (the wider of the two, what the verdict reads); ``per_seed`` differences
    with ``per_seed_ci`` and ``mcnemar`` per seed; ``power`` from the distinct test rows."""
    pairs = []
    for a, b in zip(method, baseline):
        common = [i for i in a if i in b]
        if common:
            pairs.append({i: (a[i], b[i]) for i in common})
    if not pairs:
        return None
    per_seed = [
        metric_value(metric, [x for x, _ in p.values()]) - metric_value(metric, [y for _, y in p.values()])
        for p in pairs
    ]
    samples = _row_samples(metric, pairs, resamples, SEED)
    means = [statistics.fmean(s) for s in samples]
    rows_ci = list(percentile_interval(means, CONFIDENCE))
    below = sum(s <= 0 for s in means) / len(means)
    above = sum(s >= 0 for s in means) / len(means)
    seeds = t_interval(per_seed)
    per_seed_ci, within = [], []
    for k in range(len(pairs)):
        col = [s[k] for s in samples if not math.isnan(s[k])]
        per_seed_ci.append(list(percentile_interval(col, CONFIDENCE)))
        within.append(statistics.pvariance(col) if len(col) > 1 else math.nan)
    tests = []
    for p in pairs:
        correct = [(metric.example_score(*x), metric.example_score(*y)) for x, y in p.values()]
        mc = mcnemar([x for x, _ in correct], [y for _, y in correct])
        tests.append({"only_method": mc["only_a"], "only_baseline": mc["only_b"], "p": mc["p"], "rows": len(p)})
    distinct = len(set().union(*pairs))
    discordant = statistics.fmean((t["only_method"] + t["only_baseline"]) / t["rows"] for t in tests)
    return {
        "diff": statistics.fmean(per_seed),
        "ci": _hull(seeds["ci"], rows_ci) if len(pairs) > 1 else rows_ci,
        "seed_ci": seeds["ci"],
        "seed_p": seeds["p"],
        "t_critical": seeds["t_critical"],
        "rows_ci": rows_ci,
        "p_bootstrap": min(1.0, 2 * min(below, above)),
        "seeds": len(pairs),
        "per_seed": per_seed,
        "per_seed_ci": per_seed_ci,
        "within_seed_sd": math.sqrt(statistics.fmean(within)) if not any(map(math.isnan, within)) else math.nan,
        "mcnemar": tests,
        "examples": distinct,
        "rows_per_seed": round(statistics.fmean(t["rows"] for t in tests)),
        "power": power(distinct, discordant),
    }


def verdict(vs: dict | None) -> str:
    """better | worse | no detectable change | not established | no data.

    A change needs two seeds or more and an interval (``ci``: t over seeds, widened to the rows' bootstrap)
    that excludes zero; one seed is "not established" (two prompts, not two methods); "no data" without
    paired rows."""
    if not vs or math.isnan(vs["diff"]):
        return "no data"
    if vs["seeds"] < 2:
        return "not established"
    lo, hi = vs["ci"]
    if not math.isnan(lo) and lo > 0:
        return "better"
    if not math.isnan(hi) and hi < 0:
        return "worse"
    return "no detectable change"


def verdict_line(name: str, against: str, vs: dict | None, metric_name: str) -> str:
    """One plain-word line: the verdict, the difference with its interval over seeds and rows, and, when no
    change is detected, the seeds or test rows the observed effect would need (two-sided 5%, 80% power)."""
    word = verdict(vs)
    if word == "no data":
        return f"verdict: {name} vs {against}: no paired test rows"
    size = f"{vs['seeds']} seed{'s' * (vs['seeds'] != 1)} × {vs['rows_per_seed']} test rows"
    if word == "not established":
        return (
            f"verdict: {name} vs {against}: not established: one seed compares two prompts, not two methods "
            f"({metric_name} {fmt_diff({'diff': vs['diff'], 'ci': vs['rows_ci']})} on these rows, {size}); "
            "run 3 or more seeds"
        )
    line = f"verdict: {name} vs {against}: {word} ({metric_name} {fmt_diff(vs)}, {size})"
    if word == "no detectable change":
        line += "; " + needed(vs)
    return line


def needed(vs: dict) -> str:
    """What detecting the observed difference would take (t-based, two-sided 5%, 80% power): the seeds at these
    rows per seed; and when the rows' noise within a seed dominates the spread between seeds, the test rows
    per seed at these seeds; when the spread between seeds dominates, more seeds (more rows would not do)."""
    delta = abs(vs["diff"])
    if delta < 1e-9:
        return "the observed difference is zero: no number of seeds or rows would detect it"
    s, n = vs["seeds"], vs["rows_per_seed"]
    few = (
        f"with {s} seeds the interval over seeds is ±{vs['t_critical']:.1f} standard errors (t, {s - 1} "
        f"degree{'s' * (s != 2)} of freedom), so {s} seeds can establish only a difference nearly equal on every seed; "
        if s <= 2
        else ""
    )
    sd = statistics.stdev(vs["per_seed"])
    within = vs.get("within_seed_sd", math.nan)
    if sd == 0 and not math.isnan(within):  # the same difference on every seed: only the rows' noise is left
        rows = math.ceil(n * ((Z_ALPHA + Z_POWER) * within / delta) ** 2)
        return (
            f"{few}every seed shows the same difference, so more seeds would not help: detecting "
            f"{delta:.3f} would need about {rows} test rows (the rows' noise within a seed, sd {within:.3f})"
        )
    seeds = seeds_needed(delta, sd)
    text = f"{few}detecting a difference of {delta:.3f} would need about {seeds} seeds at {n} test rows each"
    if math.isnan(within):
        return text
    between_var = max(0.0, sd**2 - within**2)
    target = s * delta**2 / (t_critical(s - 1) + t_critical(s - 1, 0.6)) ** 2  # per-seed variance that would do
    spread = (
        f"the spread between seeds, sd {math.sqrt(between_var):.3f}; the rows' noise within a seed, sd {within:.3f}"
    )
    if between_var >= target:
        return f"{text}: more seeds, not more rows (the spread between seeds alone is too wide for {s} seeds; {spread})"
    rows = math.ceil(n * within**2 / (target - between_var))
    if between_var >= within**2:
        return f"{text}: mostly more seeds ({spread}); at {s} seeds about {rows} test rows per seed"
    return f"{text}, or about {rows} test rows per seed at {s} seeds (the rows' noise dominates: {spread})"


def per_example(baseline: str, method: str, rs: list[dict], per_row: dict, metric: Metric) -> dict:
    """A compare row's per-example statistics (``rs``: the method's run records, ``per_row``: (method, seed) -> row
    id -> (parsed, gold)): the test score's interval, the paired difference to the best constant answer, and
    against ``baseline`` the difference, its intervals, the verdict, McNemar per seed and the power line."""
    seeds = [r["seed"] for r in rs]
    mine = [per_row.get((method, s)) or {} for s in seeds]
    out = {"test_ci": score_ci(metric, mine)}
    constant = constant_rows(mine, [r.get("constant_label") for r in rs])
    if constant is not None:  # the best constant answer on the same rows: paired, as the run headline is
        vs_constant = paired(metric, mine, constant)
        if vs_constant:
            out["diff_vs_constant"], out["diff_vs_constant_ci"] = vs_constant["diff"], vs_constant["ci"]
    if method != baseline:
        base = [per_row.get((baseline, s)) or {} for s in seeds]
        vs = paired(metric, mine, base)
        if vs:
            out["verdict"] = verdict(vs)
            out["verdict_line"] = verdict_line(method, baseline, vs, metric.name)
            out.update(
                {
                    "diff_vs_baseline": vs["diff"],
                    "diff_ci": vs["ci"],
                    "diff_seed_ci": vs["seed_ci"],
                    "diff_rows_ci": vs["rows_ci"],
                    "diff_p_bootstrap": vs["p_bootstrap"],
                    "mcnemar_p_per_seed": [t["p"] for t in vs["mcnemar"]],
                    "paired_examples": vs["examples"],
                    "detectable_accuracy_difference": vs["power"]["detectable_accuracy_difference"],
                    "examples_for_0.02": vs["power"]["examples_needed"],
                }
            )
    return out


def constant_rows(per_seed: list[dict], labels: list[str | None]) -> list[dict] | None:
    """Per seed, the rows of that run's best constant answer (``constant_label``) on the same test rows; None
    when a run has none (a generation task)."""
    if not labels or any(label is None for label in labels):
        return None
    return [{i: (label, g) for i, (_, g) in rows.items()} for rows, label in zip(per_seed, labels)]
