"""Results tables of a sweep, read from the cells on disk: one row per cell, mean and std per group.

``write_tables`` writes ``results.csv`` (kind = cell / mean / std) and ``results.md`` (cells, mean ±
std over seeds, and the optimizer-size view when the grid varies the optimizer model).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from apo_local.experiments.sweep.manifest import load_manifest
from apo_local.experiments.sweep.markdown import SHORT, fmt, md_table, plus_minus
from apo_local.experiments.sweep.size_view import write_size_view
from apo_local.run.result import wall_seconds
from apo_local.stats import t_critical
from apo_local.support.files import atomic_write

ID_COLUMNS = ["task", "method", "proposer", "selector", "target", "optimizer", "seed"]
VALUE_COLUMNS = [
    "test_selected",
    "test_initial",
    "test_constant",
    "test_best",
    "test_gain",
    "rounds",
    "target_calls",
    "target_prompts",
    "target_input_tokens",
    "target_output_tokens",
    "optimizer_calls",
    "optimizer_prompts",
    "optimizer_input_tokens",
    "optimizer_output_tokens",
    "optimizer_tokens",
    "target_seconds",
    "optimizer_seconds",
    "replies",
    "replies_truncated",
    "accepted_share",
    "wall_seconds",
]
_BOOKKEEPING = ("kind", "cell", "status", "n")


def cell_rows(out: str | Path) -> list[dict]:
    """One row per cell of the manifest; value columns are empty for cells without results."""
    out = Path(out)
    manifest = load_manifest(out)
    extra = sorted({k for c in manifest for k in c["labels"] if k not in ID_COLUMNS})
    rows = []
    for c in manifest:
        row = {"kind": "cell", "cell": c["id"], "status": c["status"], "n": 1}
        row.update({k: c["labels"].get(k) for k in ID_COLUMNS + extra})
        res_file = out / c["id"] / "results.json"
        if res_file.is_file():
            row.update(_result_values(json.loads(res_file.read_text(encoding="utf-8"))))
        rows.append(row)
    return rows


def _result_values(r: dict) -> dict:
    """The value columns of one finished run (its results.json)."""
    m = r["metric"]
    u = r.get("usage", {})
    t, o = u.get("target", {}), u.get("optimizer", {})
    row = dict(
        status="done",
        metric=m,
        test_initial=r["initial_test"]["metrics"][m],
        test_best=r["best_test"]["metrics"][m],
        test_selected=r["selected_test"]["metrics"][m],
        rounds=r["rounds_completed"],
        stop_reason=r["stop_reason"],
        target_calls=t.get("calls"),
        target_prompts=t.get("prompts"),
        target_input_tokens=t.get("input_tokens"),
        target_output_tokens=t.get("output_tokens"),
        optimizer_calls=o.get("calls"),
        optimizer_prompts=o.get("prompts"),
        optimizer_input_tokens=o.get("input_tokens"),
        optimizer_output_tokens=o.get("output_tokens"),
        optimizer_tokens=(o.get("input_tokens") or 0) + (o.get("output_tokens") or 0),
        wall_seconds=wall_seconds(r),
    )
    by_role, replies = r.get("time", {}).get("by_role") or {}, r.get("replies") or {}
    row.update(
        target_seconds=by_role.get("target"),
        optimizer_seconds=by_role.get("optimizer"),
        replies=replies.get("replies"),
        replies_truncated=replies.get("truncated"),
        accepted_share=replies.get("accepted_share"),
    )
    constant = r.get("constant_baselines") or {}
    if constant.get("best") is not None:  # the best constant answer on the same test rows (classification)
        row["test_constant"] = constant["by_label"][constant["best"]]["metrics"][m]
    row["test_gain"] = row["test_selected"] - row["test_initial"]  # the prompt a user deploys, not best-of-beam
    ci = (r["selected_test"].get("ci") or {}).get(m)
    if ci:
        row["test_selected_ci"] = f"[{ci[0]:.3f}, {ci[1]:.3f}]"
    return row


def group_columns(rows: list[dict]) -> list[str]:
    skip = {*_BOOKKEEPING, "seed", "metric", "stop_reason", "test_selected_ci", *VALUE_COLUMNS}
    return [k for k in rows[0] if k not in skip] if rows else []


def shown_columns(rows: list[dict]) -> list[str]:
    """The group columns worth showing: those that vary, and always task, target and optimizer."""
    return [
        k for k in group_columns(rows) if len({str(r.get(k)) for r in rows}) > 1 or k in ("task", "target", "optimizer")
    ]


def aggregate(rows: list[dict]) -> list[dict]:
    """mean and std (sample; 0 for one cell) of every value column per group (all axes but the seed)."""
    keys = group_columns(rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "done":
            groups.setdefault(tuple(str(r.get(k)) for k in keys), []).append(r)
    out = []
    for members in groups.values():
        mean = {
            "kind": "mean",
            "cell": "",
            "status": "",
            "n": len(members),
            **{k: members[0].get(k) for k in keys},
            "seed": ",".join(str(m["seed"]) for m in members),
            "metric": members[0].get("metric"),
        }
        std = dict(mean, kind="std")
        for col in VALUE_COLUMNS:
            vals = [float(m[col]) for m in members if m.get(col) is not None]
            if vals:
                mean[col] = statistics.fmean(vals)
                std[col] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        mean["test_selected_ci"] = _seed_ci(mean, std) if len(members) > 1 else members[0].get("test_selected_ci")
        out += [mean, std]
    return out


def _seed_ci(mean: dict, std: dict) -> str | None:
    """95% t-interval of the selected prompt's mean test score over the group's seeds."""
    if mean.get("test_selected") is None:
        return None
    n = mean["n"]
    half = t_critical(n - 1) * std["test_selected"] / n**0.5  # exact for every df (2.201 at 11, not 1.96)
    return f"[{mean['test_selected'] - half:.3f}, {mean['test_selected'] + half:.3f}]"


def _csv_text(rows: list[dict], aggs: list[dict]) -> str:
    extra = [
        k
        for k in (rows[0] if rows else {})
        if k not in (*_BOOKKEEPING, *ID_COLUMNS) and k not in VALUE_COLUMNS and k not in ("metric", "stop_reason")
    ]
    extra = [k for k in extra if k != "test_selected_ci"]
    cols = [*_BOOKKEEPING, *ID_COLUMNS, *extra, "metric", "test_selected_ci", *VALUE_COLUMNS, "stop_reason"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows + aggs:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()


def _markdown(name: str, rows: list[dict], aggs: list[dict]) -> list[str]:
    shown_ids = shown_columns(rows)
    vcols = VALUE_COLUMNS
    metrics = ", ".join(sorted({str(r.get("metric")) for r in rows if r.get("metric")})) or "-"
    md = [
        f"# Sweep results: {name}",
        "",
        f"{sum(r['status'] == 'done' for r in rows)} of {len(rows)} cells done. Metric: {metrics} (test split). "
        "'test selected' is the prompt the search selected without the test split (the one to deploy), with its "
        "95% bootstrap interval over test rows (per cell) or its 95% t-interval over seeds (per group); 'test best' "
        "is the best beam prompt picked on the test split (optimistic); 'test constant' is the best constant answer on "
        "the same rows (classification: a selected prompt not above it has no gain); gain = selected - initial. "
        "T = target, O = optimizer; tokens are input + output.",
        "",
        "## Cells",
        "",
    ]
    md.append(
        md_table(
            ["cell", "status", *shown_ids, "seed", "95% CI", *(SHORT.get(c, c) for c in vcols)],
            [
                [
                    r["cell"],
                    r["status"],
                    *(fmt(r.get(k)) for k in shown_ids),
                    fmt(r.get("seed")),
                    r.get("test_selected_ci") or "",
                    *(fmt(r.get(c), c) for c in vcols),
                ]
                for r in rows
            ],
        )
    )
    means, stds = aggs[0::2], aggs[1::2]
    if means:
        md += ["", "## Mean ± std over seeds (per group: every axis but the seed)", ""]
        md.append(
            md_table(
                [*shown_ids, "n", "95% CI", *(SHORT.get(c, c) for c in vcols)],
                [
                    [
                        *(fmt(m.get(k)) for k in shown_ids),
                        str(m["n"]),
                        m.get("test_selected_ci") or "",
                        *(plus_minus(m.get(c), s.get(c), c) for c in vcols),
                    ]
                    for m, s in zip(means, stds)
                ],
            )
        )
    return md


def write_tables(out: str | Path) -> list[dict]:
    """results.csv and results.md (+ optimizer-size.csv/.png when optimizers vary) from the cells on disk."""
    out = Path(out)
    rows = cell_rows(out)
    aggs = aggregate(rows)
    atomic_write(out / "results.csv", _csv_text(rows, aggs))
    md = _markdown(out.name, rows, aggs) + write_size_view(out, rows, group_columns(rows))
    atomic_write(out / "results.md", "\n".join(md) + "\n")
    return rows + aggs
