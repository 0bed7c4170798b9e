"""Per-example statistics of a comparison: every method's selected prompt against the baseline's on the same
test rows, with the seeds as a second level.

A run writes the selected prompt's prediction per test row (``predictions/test-selected.jsonl``, or
``test-best.jsonl`` when the two prompts are the same). For a method and the baseline with the same seed the
rows are the same examples, so the comparison is paired twice: by seed and by example.

* The interval of the difference is a two-level bootstrap: resample the seeds, then within each drawn seed
  the examples (the same example indices for both methods), recompute the metric of each side per seed and
  average the per-seed differences. With one seed it is the plain paired bootstrap over examples.
* McNemar (exact) pools the discordant rows over the seeds (rows only the method gets right vs rows only the
  baseline gets right); it is computed for every metric but speaks of accuracy.
* The power line: the smallest accuracy difference these rows can detect, and the rows a 0.02 difference
  needs, from the observed share of discordant rows.
* Each method's test score gets the same two-level interval (seeds, then examples).
* The verdict: better / worse / no detectable change from that interval, and for no detectable change the
  seeds (from the per-seed spread of the difference) or the test rows (from the share of discordant rows) the
  observed difference would need to be detected.
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Sequence

from apo_local.search.headline import power
from apo_local.stats import (CONFIDENCE, RESAMPLES, SEED, _percentiles, examples_needed, fmt_diff, mcnemar,
                             seeds_needed)
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


def _resample(groups: Sequence, rng: random.Random) -> list:
    return [groups[rng.randrange(len(groups))] for _ in groups] if len(groups) > 1 else list(groups)


def score_ci(metric: Metric, per_seed: list[Rows]) -> list[float]:
    """Two-level bootstrap interval of the mean over seeds of the metric."""
    per_seed = [rows for rows in per_seed if rows]
    if not per_seed:
        return [float("nan"), float("nan")]
    rng = random.Random(SEED)
    samples = []
    for _ in range(RESAMPLES):
        vals = [metric_value(metric, rng.choices(rows, k=len(rows))) for rows in _resample(per_seed, rng)]
        samples.append(sum(vals) / len(vals))
    return list(_percentiles(samples, CONFIDENCE))


def paired(metric: Metric, method: list[dict], baseline: list[dict]) -> dict | None:
    """The method minus the baseline (per seed: row id -> (parsed, gold), aligned by seed); None without rows."""
    pairs = []
    for a, b in zip(method, baseline):
        common = [i for i in a if i in b]
        if common:
            pairs.append(([a[i] for i in common], [b[i] for i in common]))
    if not pairs:
        return None
    per_seed = [metric_value(metric, ra) - metric_value(metric, rb) for ra, rb in pairs]
    diff = sum(per_seed) / len(pairs)
    rng = random.Random(SEED)
    samples = []
    for _ in range(RESAMPLES):
        vals = []
        for ra, rb in _resample(pairs, rng):
            idx = rng.choices(range(len(ra)), k=len(ra))
            vals.append(metric_value(metric, [ra[i] for i in idx]) - metric_value(metric, [rb[i] for i in idx]))
        samples.append(sum(vals) / len(vals))
    below = sum(s <= 0 for s in samples) / len(samples)
    above = sum(s >= 0 for s in samples) / len(samples)
    correct = [(metric.example_score(*x), metric.example_score(*y)) for ra, rb in pairs for x, y in zip(ra, rb)]
    mc = mcnemar([x for x, _ in correct], [y for _, y in correct])
    n = len(correct)
    return {"diff": diff, "ci": list(_percentiles(samples, CONFIDENCE)), "p_bootstrap": min(1.0, 2 * min(below, above)),
            "mcnemar_p": mc["p"], "only_method": mc["only_a"], "only_baseline": mc["only_b"], "examples": n,
            "seeds": len(pairs), "per_seed": per_seed, "rows_per_seed": n // len(pairs),
            "power": power(n, (mc["only_a"] + mc["only_b"]) / n if n else 0.0)}


def verdict(vs: dict | None) -> str:
    """better | worse | no detectable change: the two-level bootstrap interval of the difference excludes zero
    above, below, or not at all ("no data" without paired rows)."""
    if not vs or any(c != c for c in vs["ci"]):
        return "no data"
    if vs["ci"][0] > 0:
        return "better"
    if vs["ci"][1] < 0:
        return "worse"
    return "no detectable change"


def verdict_line(name: str, against: str, vs: dict | None, metric_name: str) -> str:
    """One plain-word line: the verdict, the difference with its interval over seeds and rows, and, when no
    change is detected, the seeds (at these rows per seed) or the test rows (at these seeds) the observed
    effect would need to be detected (two-sided 5%, 80% power)."""
    word = verdict(vs)
    if word == "no data":
        return f"verdict: {name} vs {against}: no paired test rows"
    line = (f"verdict: {name} vs {against}: {word} ({metric_name} {fmt_diff(vs)}, "
            f"{vs['seeds']} seed{'s' * (vs['seeds'] != 1)} × {vs['rows_per_seed']} test rows)")
    if word == "no detectable change":
        line += "; " + _needed(vs)
    return line


def _needed(vs: dict) -> str:
    delta = abs(vs["diff"])
    if delta < 1e-9:
        return "the observed difference is zero: no number of seeds or rows would detect it"
    sd = statistics.stdev(vs["per_seed"]) if len(vs["per_seed"]) > 1 else float("nan")
    seeds = seeds_needed(delta, sd)
    rows = examples_needed(min(delta, 1.0), vs["power"]["assumed_discordant"])
    seeds_text = f"about {seeds} seeds" if seeds is not None else "more than one seed (spread unknown)"
    return (f"detecting a difference of {delta:.3f} would need {seeds_text} (per-seed spread), or about {rows} test "
            f"rows per seed (paired rows)")
