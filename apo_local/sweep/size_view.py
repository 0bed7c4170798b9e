"""The optimizer-size view: same task and target, different optimizer models, sorted by parameter count.

Written by a sweep whose grid varies ``optimizer.model``: ``optimizer-size.csv``, ``optimizer-size.png``
and a section of ``results.md``; the report's sweep page shows the same rows and plot.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import statistics
from pathlib import Path

from apo_local.run_dir import atomic_write
from apo_local.sweep.markdown import fmt, md_table, plus_minus
from apo_local.sweep.params import human_params, model_parameters

log = logging.getLogger("apo_local")

_VALUES = ("test_best", "test_initial", "test_gain", "optimizer_tokens", "wall_seconds")


def optimizer_size_rows(rows: list[dict], group_keys: list[str]) -> list[dict]:
    """Per (task, target, method, other axes) series and optimizer model: test metric and optimizer
    tokens (mean +- std over seeds). Empty unless optimizers vary. ``group_keys``: the grouping axes."""
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
        row = {"series": " / ".join(s for s, k in zip(series, series_keys)
                                    if len({str(x.get(k)) for x in done}) > 1) or "all",
               "task": members[0]["task"], "target": members[0]["target"], "optimizer": opt,
               "parameters": params[opt], "n": len(members), "metric": members[0]["metric"]}
        for col in _VALUES:
            vals = [float(m[col]) for m in members if m.get(col) is not None]
            row[col] = statistics.fmean(vals) if vals else math.nan
            row[col + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(row)
    out.sort(key=lambda r: (r["series"], r["parameters"] or 0, r["optimizer"]))
    return out


def _markdown(size_rows: list[dict]) -> list[str]:
    md = ["", "## Optimizer size", "", "Same task and target, different optimizer models "
          "(mean ± std over seeds; sorted by parameter count).", ""]
    md.append(md_table(["series", "optimizer", "params", "n", "test best", "test initial", "gain",
                        "optimizer tokens", "wall s"],
                       [[r["series"], r["optimizer"], human_params(r["parameters"]), str(r["n"]),
                         plus_minus(r["test_best"], r["test_best_std"], "test_"),
                         fmt(r["test_initial"], "test_"), plus_minus(r["test_gain"], r["test_gain_std"], "test_"),
                         plus_minus(r["optimizer_tokens"], r["optimizer_tokens_std"]),
                         plus_minus(r["wall_seconds"], r["wall_seconds_std"])] for r in size_rows]))
    return md


def write_size_view(out: Path, rows: list[dict], group_keys: list[str]) -> list[str]:
    """optimizer-size.csv and .png in ``out`` when optimizers vary; returns the results.md lines."""
    size_rows = optimizer_size_rows(rows, group_keys)
    if not size_rows:
        return []
    md = _markdown(size_rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(size_rows[0]), lineterminator="\n")
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
    from apo_local.figures import png

    return png(optimizer_size_figure(rows))


def optimizer_size_figure(rows: list[dict]):
    """Test metric and optimizer tokens per optimizer model (one line per series), mean +- std over seeds."""
    from matplotlib.figure import Figure

    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(r["series"], []).append(r)
    models = list(dict.fromkeys(r["optimizer"] for r in sorted(rows, key=lambda r: (r["parameters"] or 0, r["optimizer"]))))
    params = {r["optimizer"]: r["parameters"] for r in rows}
    fig = Figure(figsize=(10, 4.3), layout="constrained")  # constrained: the figure title clears the panel titles
    ax1, ax2 = fig.subplots(1, 2)
    n = max(1, len(series))
    for k, (name, rs) in enumerate(series.items()):
        rs = sorted(rs, key=lambda r: models.index(r["optimizer"]))
        xs = [models.index(r["optimizer"]) + (k - (n - 1) / 2) * 0.08 for r in rs]
        line = ax1.errorbar(xs, [r["test_best"] for r in rs], yerr=[r["test_best_std"] for r in rs], fmt="o-",
                            capsize=4, label=f"{name}: best prompt")
        ax1.plot(xs, [r["test_initial"] for r in rs], "x:", color=line[0].get_color(), label=f"{name}: initial prompt")
        w = 0.8 / n
        ax2.bar([models.index(r["optimizer"]) + (k - (n - 1) / 2) * w for r in rs], [r["optimizer_tokens"] for r in rs],
                w, yerr=[r["optimizer_tokens_std"] for r in rs], capsize=4, label=name, color=line[0].get_color())
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

