"""What is said about one prompt's evaluation beside the best constant answer on the same rows (its row, the paired
difference) and about the labels it predicts far below their true share: the same lines in optimize's table and
in evaluate."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apo_local.tasks import Task


def constant_baseline(task: Task, rows, evaluation) -> dict:
    """Classification: what always answering one label scores on the same rows (the functions optimize's final
    evaluation uses: ``run/baselines.py``), and the prompt minus the best of them, paired. {} otherwise."""
    from apo_local.run.baselines import best_constant, constant_evaluations, majority_label
    from apo_local.run.headline import SplitStats

    constants = constant_evaluations(task, rows)
    if not constants:
        return {}
    majority = majority_label(task, task.split("train")) if "train" in task.split_names else None
    top = best_constant(constants, task.metric.name, majority)
    stats = SplitStats(task.metric, rows)
    return {
        "constant_baselines": {
            "best": top,
            "majority_label": majority,
            "by_label": {label: stats.summary(e) for label, e in constants.items()},
        },
        "prompt_vs_constant": stats.paired(evaluation, constants[top]),
    }


def lean_warnings(evaluation: dict, who: str, rows: str, why: str) -> list[str]:
    """One warning line per label ``who`` predicts far below its true share (``headline.suppressed_labels``):
    optimize's table and evaluate say it the same way."""
    from apo_local.run.headline import suppressed_labels

    return [
        f"warning: {who} predicts {label!r} for {share_p:.0%} of {rows} (true share {share_t:.0%}): {why}"
        for label, share_p, share_t in suppressed_labels(evaluation)
    ]


def constant_lines(metric: str, constant: dict, vs: dict | None, who: str) -> list[str]:
    """The best constant answer's row and ``who`` minus it (paired), from a ``constant_baselines`` record."""
    from apo_local.stats import fmt_ci

    label = constant["best"]
    summary = constant["by_label"][label]
    majority = " (= train majority)" if label == constant.get("majority_label") else ""
    lines = [
        f"best constant answer: always {label!r}{majority}: {metric} "
        f"{fmt_ci(summary['metrics'][metric], (summary.get('ci') or {}).get(metric))}"
    ]
    if vs:
        lines.append(vs_constant_line(who, label, metric, vs))
    return lines


def vs_constant_line(who: str, label: str, metric: str, vs: dict) -> str:
    """``who`` minus always answering ``label`` on the same rows: the metric's paired difference (and balanced
    accuracy's, for F1-type metrics)."""
    from apo_local.stats import fmt_diff

    line = f"{who} - always {label!r}: {metric} {fmt_diff(vs[metric])}"
    if "balanced_accuracy" in vs:
        line += f"; balanced accuracy {fmt_diff(vs['balanced_accuracy'])}"
    return line
