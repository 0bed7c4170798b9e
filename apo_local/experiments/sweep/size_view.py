"""The optimizer-size view: same task and target, different optimizer models, sorted by parameter count.

Written by a sweep whose grid varies ``optimizer.model``: ``optimizer-size.csv``, ``optimizer-size.png``
and a section of ``results.md``; the report's sweep page shows the same rows and plot. Per series: the test
metric of the prompt each search selected (mean ± std over seeds, and a two-level bootstrap interval over
seeds and rows), the initial prompt and the best constant answer on the same rows, and each larger optimizer
against the series' smallest: the paired difference on the same test rows and seeds (``compare_stats``),
tokens and seconds per role, and what became of the optimizer's replies.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import statistics
from pathlib import Path

from apo_local.experiments.sweep.markdown import fmt, md_table, plus_minus
from apo_local.experiments.sweep.params import human_params, model_parameters
from apo_local.support.files import atomic_write

log = logging.getLogger("apo_local")

_VALUES = (
    "test_selected",
    "test_initial",
    "test_constant",
    "test_best",
    "test_gain",
    "target_prompts",
    "target_input_tokens",
    "optimizer_tokens",
    "target_seconds",
    "optimizer_seconds",
    "replies",
    "replies_truncated",
    "accepted_share",
    "wall_seconds",
)


def optimizer_size_rows(rows: list[dict], group_keys: list[str], out: Path | None = None) -> list[dict]:
    """Per (task, target, method, other axes) series and optimizer model: test metric and optimizer
    tokens (mean +- std over seeds). Empty unless optimizers vary. ``group_keys``: the grouping axes."""
    sweep_dir = out
    done = [r for r in rows if r["status"] == "done"]
    if len({r["optimizer"] for r in done}) < 2:
        return []
    series_keys = [k for k in group_keys if k != "optimizer"]
    groups: dict[tuple, list[dict]] = {}
    for r in done:
        groups.setdefault((tuple(str(r.get(k)) for k in series_keys), r["optimizer"]), []).append(r)
    params: dict[str, int | None] = {}
    out = []
    for (series, opt), members in groups.items():
        if opt not in params:
            params[opt] = model_parameters(members[0], opt)
        row = {
            "series": " / ".join(s for s, k in zip(series, series_keys) if len({str(x.get(k)) for x in done}) > 1)
            or "all",
            "task": members[0]["task"],
            "target": members[0]["target"],
            "optimizer": opt,
            "parameters": params[opt],
            "n": len(members),
            "metric": members[0]["metric"],
        }
        for col in _VALUES:
            vals = [float(m[col]) for m in members if m.get(col) is not None]
            row[col] = statistics.fmean(vals) if vals else math.nan
            row[col + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        row["_cells"] = {m["seed"]: m["cell"] for m in members}
        out.append(row)
    out.sort(key=lambda r: (r["series"], r["parameters"] or 0, r["optimizer"]))
    if sweep_dir is not None:
        _add_paired(out, sweep_dir)
    for row in out:
        del row["_cells"]
    return out


def _add_paired(size_rows: list[dict], sweep_dir: Path) -> None:
    """Each row's interval of the selected prompt's test metric (``compare_stats.score_ci``), and against the
    smallest optimizer of its series (same seeds, same test rows) the paired difference with its interval and
    McNemar's p per seed (``compare_stats.paired``)."""
    from apo_local.experiments.compare_stats import paired, score_ci, selected_rows, verdict
    from apo_local.tasks import load_task

    metrics: dict[str, object] = {}
    smallest: dict[tuple, dict] = {}
    for row in size_rows:  # sorted by series, then parameters: the first of a series is its smallest
        key = (row["series"], row["task"], row["target"])
        if row["task"] not in metrics:
            metrics[row["task"]] = load_task(row["task"]).metric
        metric = metrics[row["task"]]
        per_seed = {seed: selected_rows(sweep_dir / cell) for seed, cell in row["_cells"].items()}
        row["_rows"] = per_seed
        row["test_ci"] = score_ci(metric, list(per_seed.values()))
        ref = smallest.setdefault(key, row)
        if ref is row:
            continue
        seeds = sorted(set(per_seed) & set(ref["_rows"]))
        vs = paired(metric, [per_seed[s] for s in seeds], [ref["_rows"][s] for s in seeds])
        if vs:
            # p beside the interval it goes with: the t test over seeds (one seed: the rows' paired bootstrap)
            p = vs["seed_p"] if vs["seeds"] > 1 else vs["p_bootstrap"]
            row.update(
                vs_optimizer=ref["optimizer"],
                diff=vs["diff"],
                diff_ci=vs["ci"],
                diff_p=p,
                verdict=verdict(vs),
                mcnemar_p_per_seed=[t["p"] for t in vs["mcnemar"]],
                paired_seeds=vs["seeds"],
                paired_rows=vs["examples"],
            )
    for row in size_rows:
        row.pop("_rows", None)


def interval(ci) -> str:
    """'[0.383, 0.581]' ('' without an interval)."""
    return "" if not ci or any(c != c for c in ci) else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _diff(r: dict) -> str:
    if r.get("diff") is None:
        return "(reference)" if r.get("paired_rows") is None else ""
    return (
        f"{r['diff']:+.3f} {interval(r['diff_ci'])} (p={r['diff_p']:.2f}; {r['paired_seeds']} seeds × rows: "
        f"{r['verdict']})"
    )


def _markdown(size_rows: list[dict]) -> list[str]:
    md = [
        "",
        "## Optimizer size",
        "",
        "Same task and target, different optimizer models, sorted by parameter count: "
        "the test metric of the prompt each search selected (mean ± std over seeds; 95% CI: Student t over the "
        "seeds, widened to the test rows' bootstrap), the initial prompt and the best constant answer on the same "
        "rows, and each larger optimizer minus the series' smallest on the same seeds and test rows (the same "
        "paired interval, its p from the t test over seeds, and the verdict: a change only when the interval "
        "excludes zero). "
        "T = target, O = optimizer; seconds are engine seconds per role.",
        "",
    ]
    md.append(
        md_table(
            [
                "series",
                "optimizer",
                "params",
                "n",
                "test selected",
                "95% CI",
                "test initial",
                "test constant",
                "vs smallest optimizer",
                "O tokens",
                "T prompts",
                "T s",
                "O s",
                "O replies",
                "truncated",
                "accepted share",
                "wall s",
            ],
            [
                [
                    r["series"],
                    r["optimizer"],
                    human_params(r["parameters"]),
                    str(r["n"]),
                    plus_minus(r["test_selected"], r["test_selected_std"], "test_"),
                    interval(r.get("test_ci")),
                    fmt(r["test_initial"], "test_"),
                    fmt(r["test_constant"], "test_"),
                    _diff(r),
                    plus_minus(r["optimizer_tokens"], r["optimizer_tokens_std"]),
                    fmt(r["target_prompts"]),
                    plus_minus(r["target_seconds"], r["target_seconds_std"]),
                    plus_minus(r["optimizer_seconds"], r["optimizer_seconds_std"]),
                    fmt(r["replies"]),
                    fmt(r["replies_truncated"]),
                    fmt(r["accepted_share"], "accepted_share"),
                    plus_minus(r["wall_seconds"], r["wall_seconds_std"]),
                ]
                for r in size_rows
            ],
        )
    )
    return md


def write_size_view(out: Path, rows: list[dict], group_keys: list[str]) -> list[str]:
    """optimizer-size.csv and .png in ``out`` when optimizers vary; returns the results.md lines."""
    size_rows = optimizer_size_rows(rows, group_keys, out)
    if not size_rows:
        return []
    md = _markdown(size_rows)
    buf = io.StringIO()
    columns = list(dict.fromkeys(k for r in size_rows for k in r))  # a series' reference row has no paired columns
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(size_rows)
    atomic_write(out / "optimizer-size.csv", buf.getvalue())
    try:
        (out / "optimizer-size.png").write_bytes(optimizer_size_plot(size_rows))
        md += ["", "![optimizer size](optimizer-size.png)"]
    except ImportError:  # matplotlib missing: the table is still there
        log.warning("matplotlib is not installed: no optimizer-size.png")
    return md


def optimizer_size_plot(rows: list[dict]) -> bytes:
    from apo_local.support.figures import png

    return png(optimizer_size_figure(rows))


def optimizer_size_figure(rows: list[dict]):
    """Test metric and optimizer tokens per optimizer model (one line per series), mean +- std over seeds."""
    from matplotlib.figure import Figure

    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(r["series"], []).append(r)
    models = list(
        dict.fromkeys(r["optimizer"] for r in sorted(rows, key=lambda r: (r["parameters"] or 0, r["optimizer"])))
    )
    params = {r["optimizer"]: r["parameters"] for r in rows}
    fig = Figure(figsize=(10, 4.3), layout="constrained")  # constrained: the figure title clears the panel titles
    ax1, ax2 = fig.subplots(1, 2)
    n = max(1, len(series))
    for k, (name, rs) in enumerate(series.items()):
        rs = sorted(rs, key=lambda r: models.index(r["optimizer"]))
        xs = [models.index(r["optimizer"]) + (k - (n - 1) / 2) * 0.08 for r in rs]
        line = ax1.errorbar(
            xs,
            [r["test_selected"] for r in rs],
            yerr=[r["test_selected_std"] for r in rs],
            fmt="o-",
            capsize=4,
            label=f"{name}: selected prompt",
        )
        ax1.plot(xs, [r["test_initial"] for r in rs], "x:", color=line[0].get_color(), label=f"{name}: initial prompt")
        if any(r["test_constant"] == r["test_constant"] for r in rs):  # not all nan: a classification task
            ax1.plot(
                xs,
                [r["test_constant"] for r in rs],
                "_--",
                color=line[0].get_color(),
                markersize=14,
                label=f"{name}: best constant answer",
            )
        w = 0.8 / n
        ax2.bar(
            [models.index(r["optimizer"]) + (k - (n - 1) / 2) * w for r in rs],
            [r["optimizer_tokens"] for r in rs],
            w,
            yerr=[r["optimizer_tokens_std"] for r in rs],
            capsize=4,
            label=name,
            color=line[0].get_color(),
        )
    ticks = [f"{m}\n({human_params(params[m])})" for m in models]
    metric = rows[0]["metric"] if rows else "metric"
    for ax, title in ((ax1, f"test {metric}"), (ax2, "optimizer tokens (input + output)")):
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(ticks, fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlabel("optimizer model")
    ax1.legend(fontsize=7)
    fig.suptitle("Optimizer size: same task and target, different optimizer models (mean ± std over seeds)")
    return fig
