"""Fair comparison of methods: same task, same budget, same seeds, one engine session.

    apo-local compare --config configs/compare-liar.yaml --out runs/compare

The config names a base run config, the methods as overrides of it, the seeds and the budget::

    base: {task: liar, search: {...}, selection: {...}}
    methods: {protegi: {}, mc: {protegi: {n_gradients: 0}}, ...}
    seeds: [0, 1, 2]
    budget: {max_target_calls: 4000, max_optimizer_tokens: 200000}
    baseline: protegi            # the method every p-value is computed against (default: protegi)

Every (method, seed) cell is a normal run directory ``OUT/<method>/seed-<s>/`` run by the sweep's
cell runner (``apo_local.experiments.sweep.cell``); the budget is applied last, so no method can change it.
Engines load once per process, so all cells share one engine session. A cell with ``results.json``
is skipped, an interrupted one is resumed: re-running the same command continues a comparison.

Written: ``OUT/results.csv`` and ``OUT/results.md`` (per method: test metric mean ± std over seeds
of the prompt the search selected, no test peeking; the max-pooled best-of-beam test too; mean usage
by role; a permutation-test p-value against the baseline; accepted-update steps; prompt length in
tokens per step; reflection similarity across rounds and to the baseline's run with the same seed) and ``OUT/runs.csv`` (one row per run).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from apo_local.experiments.compare_tables import csv_text, markdown
from apo_local.experiments.sweep.cell import initial_status
from apo_local.experiments.sweep.cell import run_cell as run_or_resume
from apo_local.run.config import RunConfig, build_config, deep_merge, dump_config, inherit, read_yaml_mapping
from apo_local.run.run_dir import COMPARE_SPEC
from apo_local.support.errors import ApoError

log = logging.getLogger("apo_local")
_KEYS = {"base", "methods", "seeds", "budget", "baseline"}


@dataclass
class CompareSpec:
    base: dict
    methods: dict[str, dict]
    seeds: list[int]
    budget: dict = field(default_factory=dict)
    baseline: str = "protegi"

    def config(self, method: str, seed: int) -> RunConfig:
        # like ``extends:``, a method inherits only the base's method knobs its own proposer and selector use
        data = deep_merge(inherit(self.base, self.methods[method]), {"seed": seed, "budget": self.budget})
        return build_config(data, origin=f"compare method {method!r}")


def spec_from_dict(data: dict, origin: str = "compare config") -> CompareSpec:
    if not isinstance(data, dict):
        raise ApoError(f"{origin}: expected a mapping with base, methods, seeds, budget")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ApoError(f"{origin}: {unknown[0]}: unknown key (keys: {', '.join(sorted(_KEYS))})")
    methods = data.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise ApoError(f"{origin}: methods: give at least one method (name: overrides of base)")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ApoError(f"{origin}: seeds: expected a list of integers")
    spec = CompareSpec(
        base=data.get("base") or {},
        methods={k: v or {} for k, v in methods.items()},
        seeds=seeds,
        budget=data.get("budget") or {},
        baseline=data.get("baseline", "protegi"),
    )
    if spec.baseline not in spec.methods:
        raise ApoError(f"{origin}: baseline: method {spec.baseline!r} is not in methods")
    for m in spec.methods:  # validate every cell's config before any engine starts
        if "/" in m or m.startswith("."):
            raise ApoError(f"{origin}: methods: {m!r} is not a usable folder name")
        spec.config(m, seeds[0])
    return spec


def load_spec(path: str | Path) -> CompareSpec:
    p = Path(path)
    return spec_from_dict(read_yaml_mapping(p, "compare config"), origin=str(p))


# -- statistics ------------------------------------------------------------------------------


def permutation_test(
    a: Sequence[float], b: Sequence[float], *, paired: bool = False, resamples: int = 10_000, seed: int = 0
) -> float | None:
    """Two-sided permutation p-value for a difference in means of ``a`` and ``b``.

    ``paired`` (same seeds on both sides): sign flips of the per-pair differences; otherwise
    relabelings of the pooled scores. Exact when there are at most ``resamples`` arrangements,
    else ``resamples`` seeded random ones (p = (hits + 1) / (resamples + 1))."""
    a, b = list(map(float, a)), list(map(float, b))
    if not a or not b or (paired and len(a) != len(b)):
        return None
    eps = 1e-12
    if paired:
        d = [x - y for x, y in zip(a, b)]
        observed = abs(sum(d))
        if 2 ** len(d) <= resamples:
            stats = [abs(sum(s * x for s, x in zip(signs, d))) for signs in itertools.product((1, -1), repeat=len(d))]
            return sum(s >= observed - eps for s in stats) / len(stats)
        rng = random.Random(seed)
        hits = sum(abs(sum(x if rng.random() < 0.5 else -x for x in d)) >= observed - eps for _ in range(resamples))
        return (hits + 1) / (resamples + 1)
    pooled, n = a + b, len(a)
    total = sum(pooled)
    observed = abs(sum(a) / n - sum(b) / len(b))

    def diff(idx) -> float:
        sa = sum(pooled[i] for i in idx)
        return abs(sa / n - (total - sa) / len(b))

    if math.comb(len(pooled), n) <= resamples:
        stats = [diff(idx) for idx in itertools.combinations(range(len(pooled)), n)]
        return sum(s >= observed - eps for s in stats) / len(stats)
    rng = random.Random(seed)
    hits = sum(diff(rng.sample(range(len(pooled)), n)) >= observed - eps for _ in range(resamples))
    return (hits + 1) / (resamples + 1)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _std(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


# -- running ---------------------------------------------------------------------------------


def run_record(method: str, seed: int, results: dict) -> dict:
    from apo_local.run.attribution import step_tally

    m = results["metric"]
    lineage_steps, distinguishable = step_tally(results.get("attribution"))
    history = results.get("history", [])
    usage = results.get("usage", {})
    return {
        "method": method,
        "seed": seed,
        "metric": m,
        "test": results["selected_test"]["metrics"][m],
        "best_test": results["best_test"]["metrics"][m],
        "initial_test": results["initial_test"]["metrics"][m],
        **_constant(results, m),
        "rounds": results["rounds_completed"],
        "stop_reason": results["stop_reason"],
        "accepted_steps": sum(bool(h.get("accepted")) for h in history),
        "prompt_tokens_per_step": [(h.get("prompt_tokens") or [None])[0] for h in history],
        "lineage_steps": lineage_steps,
        "lineage_steps_distinguishable": distinguishable,
        **{
            f"{role}_{k}": usage.get(role, {}).get(k, 0)
            for role in ("target", "optimizer")
            for k in ("calls", "prompts", "input_tokens", "output_tokens")
        },
    }


def _constant(results: dict, m: str) -> dict:
    """The best constant answer on the run's test rows (classification; {} for a run without one)."""
    constant = results.get("constant_baselines") or {}
    if constant.get("best") is None:
        return {}
    return {"constant_label": constant["best"], "constant_test": constant["by_label"][constant["best"]]["metrics"][m]}


def run_cell(spec: CompareSpec, method: str, seed: int, out: Path) -> dict:
    """Run, resume or skip the (method, seed) cell (the sweep's cell runner), then read its record."""
    cell = out / method / f"seed-{seed}"
    state = initial_status(cell)
    log.info(
        "compare: %s seed %d: %s",
        method,
        seed,
        {"done": "done already", "interrupted": "resuming"}.get(state, "running"),
    )
    # release=False: a comparison keeps the engines it loaded until it ends (one engine session)
    run_or_resume(cell, dump_config(spec.config(method, seed)), release=False)
    return run_record(method, seed, json.loads((cell / "results.json").read_text()))


def add_reflection_similarity(spec: CompareSpec, runs: list[dict], out: Path) -> None:
    """Per run: mean Jaccard similarity of its reflections across rounds, and to the baseline's
    reflections with the same seed (Ma et al., 2024: generic feedback looks alike everywhere)."""
    from apo_local.experiments.diagnostics import between_runs, reflections, within_run

    refl = {(r["method"], r["seed"]): reflections(out / r["method"] / f"seed-{r['seed']}") for r in runs}
    for r in runs:
        mine = refl[(r["method"], r["seed"])]
        r["reflection_self_jaccard"] = within_run(mine)["across_rounds"]["jaccard"]
        base = refl.get((spec.baseline, r["seed"]))
        r[f"reflection_vs_{spec.baseline}_jaccard"] = (
            None if base is None or r["method"] == spec.baseline else between_runs(mine, base)["all_pairs"]["jaccard"]
        )


def summarize(spec: CompareSpec, runs: list[dict], per_row: dict | None = None, metric=None) -> list[dict]:
    """One row per method. With ``per_row`` ((method, seed) -> test row id -> (parsed, gold)) and the task's
    ``metric``: the per-example statistics too (``compare_stats``: the test score's interval, and against the
    baseline the paired difference with its interval, McNemar and the power line)."""
    from apo_local.experiments.compare_stats import per_example

    by = {m: [r for r in runs if r["method"] == m] for m in spec.methods}
    base = {r["seed"]: r["test"] for r in by.get(spec.baseline, [])}
    rows = []
    for m, rs in by.items():
        if not rs:
            continue
        tests = [r["test"] for r in rs]
        if m == spec.baseline:
            p = None
        else:
            common = [r["seed"] for r in rs if r["seed"] in base]
            paired = len(common) == len(rs) == len(base)
            p = permutation_test(
                [r["test"] for r in rs], [base[s] for s in common] if paired else list(base.values()), paired=paired
            )
        steps = max(len(r["prompt_tokens_per_step"]) for r in rs)
        per_step = [
            _mean([r["prompt_tokens_per_step"][i] for r in rs if i < len(r["prompt_tokens_per_step"])])
            for i in range(steps)
        ]
        row = {
            "method": m,
            "seeds": len(rs),
            "metric": rs[0]["metric"],
            "test_mean": _mean(tests),
            "test_std": _std(tests),
            "best_test_mean": _mean([r["best_test"] for r in rs]),
            "initial_test_mean": _mean([r["initial_test"] for r in rs]),
            "constant_test_mean": _mean([r.get("constant_test") for r in rs]),
            "constant_label": "/".join(sorted({r["constant_label"] for r in rs if r.get("constant_label")})) or None,
            "p_vs_" + spec.baseline: p,
            "accepted_steps_mean": _mean([r["accepted_steps"] for r in rs]),
            "rounds_mean": _mean([r["rounds"] for r in rs]),
            "prompt_tokens_per_step": " → ".join("-" if x is None else f"{x:.0f}" for x in per_step),
        }
        for role in ("target", "optimizer"):
            for k in ("calls", "prompts", "input_tokens", "output_tokens"):
                row[f"{role}_{k}_mean"] = _mean([r[f"{role}_{k}"] for r in rs])
        for k in ("reflection_self_jaccard", f"reflection_vs_{spec.baseline}_jaccard"):
            row[k + "_mean"] = _mean([r.get(k) for r in rs])
        row.update(_lineage_share(rs))
        if per_row is not None and metric is not None:
            row.update(per_example(spec.baseline, m, rs, per_row, metric))
        rows.append(row)
    return rows


def _lineage_share(rs: list[dict]) -> dict:
    """Accepted steps on the selected prompts' lineages (edit attribution) and the share whose test gain is
    distinguishable from zero (family-wise, Holm); runs without an attribution left out."""
    steps = sum(r.get("lineage_steps") or 0 for r in rs)
    distinct = sum(r.get("lineage_steps_distinguishable") or 0 for r in rs)
    return {
        "lineage_steps": steps,
        "lineage_steps_distinguishable": distinct,
        "lineage_distinguishable_share": distinct / steps if steps else None,
    }


def compare(spec: CompareSpec, out: str | Path) -> list[dict]:
    """Run every method × seed (skipping finished cells) and write the tables; returns the summary rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    (out / COMPARE_SPEC).write_text(
        yaml.safe_dump(
            {
                "base": spec.base,
                "methods": spec.methods,
                "seeds": spec.seeds,
                "budget": spec.budget,
                "baseline": spec.baseline,
            },
            sort_keys=False,
        )
    )
    runs = [run_cell(spec, m, s, out) for m in spec.methods for s in spec.seeds]
    add_reflection_similarity(spec, runs, out)
    from apo_local.experiments.compare_stats import selected_rows
    from apo_local.tasks import load_task

    per_row = {(r["method"], r["seed"]): selected_rows(out / r["method"] / f"seed-{r['seed']}") for r in runs}
    metric = load_task(spec.config(spec.baseline, spec.seeds[0]).task).metric
    rows = summarize(spec, runs, per_row, metric)
    (out / "runs.csv").write_text(csv_text(runs))
    (out / "results.csv").write_text(csv_text(rows))
    (out / "results.md").write_text(markdown(spec, rows, runs))
    return rows
