"""The tables ``apo-local compare`` writes: ``results.md`` (per method: the selected prompt's test metric over seeds
beside the constant answer, the paired difference to the baseline, usage, steps, prompt length; then one row per
run) and the CSV files."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apo_local.experiments.compare import CompareSpec


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        columns = list(dict.fromkeys(k for r in rows for k in r))  # the baseline row has no "vs baseline" columns
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()})
    return buf.getvalue()


def _ci(ci) -> str:
    return "-" if not ci or any(c != c for c in ci) else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def _above_constant(r: dict) -> bool:
    """The paired interval of the method minus the best constant answer on the same rows is above zero (without
    per-row data: the score's interval above the constant's score)."""
    ci, value = (
        (r["diff_vs_constant_ci"], 0.0) if r.get("diff_vs_constant_ci") else (r.get("test_ci"), r["constant_test_mean"])
    )
    return bool(ci) and not any(c != c for c in ci) and ci[0] > value


def _mcnemar_cell(r: dict) -> str:
    return " / ".join(_fmt(p) for p in r.get("mcnemar_p_per_seed") or []) or "-"


def _diff(r: dict) -> str:
    return "-" if r.get("diff_vs_baseline") is None else f"{r['diff_vs_baseline']:+.4f} {_ci(r['diff_ci'])}"


def _constant_cell(r: dict) -> str:
    if r.get("constant_test_mean") is None:
        return "-"
    return f"{_fmt(r['constant_test_mean'])} (always {r['constant_label']})"


def markdown(spec: CompareSpec, rows: list[dict], runs: list[dict]) -> str:
    """``results.md``: the methods' table and its notes, the verdicts, the reflections and one row per run."""
    metric = rows[0]["metric"] if rows else "metric"
    lines = _method_table(spec, rows, metric) + _notes(spec, rows, metric) + _verdicts(spec, rows)
    lines += _reflections(spec, rows) + _runs_table(runs)
    return "\n".join(lines) + "\n"


def _method_table(spec: CompareSpec, rows: list[dict], metric: str) -> list[str]:
    pk = "p_vs_" + spec.baseline
    head = [
        "method",
        "seeds",
        f"test {metric} (mean ± std)",
        "95% CI (seeds, rows)",
        "initial prompt",
        "best constant answer",
        f"vs {spec.baseline}: diff [95% CI]",
        "McNemar p per seed",
        "best-of-beam test (optimistic)",
        "p over seeds",
        "accepted steps",
        "target calls / prompts",
        "optimizer calls / in / out tokens",
        "prompt tokens per step",
    ]
    lines = [
        f"# Comparison: {len(spec.methods)} methods × {len(spec.seeds)} seeds",
        "",
        f"Budget per run: {spec.budget or 'none'}; test metric of the prompt each search selected "
        f"(no test peeking). Against {spec.baseline}: the difference on the same test rows with its paired "
        "interval (Student t over the per-seed differences, df = seeds - 1, widened to the rows' paired bootstrap) "
        "and the exact McNemar test of each seed's pair of prompts; "
        "'p over seeds': permutation test of the per-seed scores (with 3 seeds its smallest value is 0.25).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["method"],
                    str(r["seeds"]),
                    f"{r['test_mean']:.4f} ± {r['test_std']:.4f}",
                    _ci(r.get("test_ci")),
                    _fmt(r.get("initial_test_mean")),
                    _constant_cell(r),
                    _diff(r),
                    _mcnemar_cell(r),
                    _fmt(r["best_test_mean"]),
                    _fmt(r[pk]),
                    _fmt(r["accepted_steps_mean"]),
                    f"{_fmt(r['target_calls_mean'])} / {_fmt(r['target_prompts_mean'])}",
                    f"{_fmt(r['optimizer_calls_mean'])} / {_fmt(r['optimizer_input_tokens_mean'])} / "
                    f"{_fmt(r['optimizer_output_tokens_mean'])}",
                    r["prompt_tokens_per_step"] or "-",
                ]
            )
            + " |"
        )
    return lines


def _notes(spec: CompareSpec, rows: list[dict], metric: str) -> list[str]:
    lines: list[str] = []
    below = [r["method"] for r in rows if r.get("constant_test_mean") is not None and not _above_constant(r)]
    if below:
        lines += [
            "",
            f"Not above a constant answer: {', '.join(below)} (the paired 95% interval of the test {metric} "
            "minus the best constant answer's on the same rows reaches zero): no gain a constant does not match.",
        ]
    lines += [""] + [
        f"Power: one pair of prompts ({r['method']} vs {spec.baseline}, one seed) on {r['paired_examples']} "
        f"distinct test rows detects an "
        f"accuracy difference of {_fmt(r['detectable_accuracy_difference'])} (80% power, 5% level); a 0.02 "
        f"difference needs about {r['examples_for_0.02']} rows."
        for r in rows
        if r.get("paired_examples")
    ]
    lines += [
        "",
        "Edit attribution: accepted steps on the selected prompts' lineages whose test gain is "
        "distinguishable from zero (family-wise 5%, Holm over each run's attribution): "
        + ", ".join(
            f"{r['method']} {r['lineage_steps_distinguishable']}/{r['lineage_steps']}"
            f" ({_fmt(r['lineage_distinguishable_share'])})"
            for r in rows
        )
        + ".",
    ]
    return lines


def _verdicts(spec: CompareSpec, rows: list[dict]) -> list[str]:
    lines: list[str] = []
    verdicts = [r["verdict_line"] for r in rows if r.get("verdict_line")]
    if verdicts:
        lines += [
            "",
            "## Verdict",
            "",
            f"Each method against {spec.baseline} on the same seeds and test rows (a change only "
            "when the 95% interval over seeds (Student t, df = seeds - 1) and the rows' paired bootstrap both "
            "exclude zero; one seed compares two prompts, not two methods).",
            "",
        ]
        lines += [f"- {v.removeprefix('verdict: ')}" for v in verdicts]
    return lines


def _reflections(spec: CompareSpec, rows: list[dict]) -> list[str]:
    rk = f"reflection_vs_{spec.baseline}_jaccard_mean"
    lines = [
        "",
        "## Reflections",
        "",
        "Mean token-set Jaccard similarity of the optimizer's reflections (gradients, "
        f"feedback, critiques) across the rounds of a run, and to the {spec.baseline} run with the same seed "
        "(`apo-local diagnose RUN [OTHER]` for details).",
        "",
        f"| method | across rounds | vs {spec.baseline} |",
        "|---|---|---|",
    ]
    return lines + [f"| {r['method']} | {_fmt(r['reflection_self_jaccard_mean'])} | {_fmt(r[rk])} |" for r in rows]


def _runs_table(runs: list[dict]) -> list[str]:
    lines = [
        "",
        "## Runs",
        "",
        "| method | seed | test | accepted steps | prompt tokens per step | stop |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['test']:.4f} | {r['accepted_steps']} | "
            f"{' → '.join(map(str, r['prompt_tokens_per_step'])) or '-'} | {r['stop_reason']} |"
        )
    return lines
