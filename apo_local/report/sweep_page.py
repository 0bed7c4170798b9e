"""The report page of a sweep directory: optimizer-size view, results per cell (linked to each
cell's own report) and mean ± std per group. Tables come from ``apo_local.experiments.sweep``."""

from __future__ import annotations

import logging
from pathlib import Path

from apo_local.experiments.sweep.markdown import SHORT, plus_minus
from apo_local.experiments.sweep.params import human_params
from apo_local.experiments.sweep.size_view import interval, optimizer_size_plot, optimizer_size_rows
from apo_local.experiments.sweep.tables import group_columns, shown_columns, write_tables
from apo_local.report import plots as P
from apo_local.report.html import Page, esc
from apo_local.report.run_page import write_run_report

log = logging.getLogger("apo_local")

VALUE_COLUMNS = [
    "test_selected_ci",
    "test_selected",
    "test_initial",
    "test_constant",
    "test_best",
    "test_gain",
    "rounds",
    "target_calls",
    "target_prompts",
    "target_input_tokens",
    "optimizer_calls",
    "optimizer_input_tokens",
    "optimizer_output_tokens",
    "wall_seconds",
]


def write_sweep_report(path: str | Path, *, cells: bool = False) -> Path:
    out = Path(path)
    rows = write_tables(out)  # refresh results.csv/.md from the cells on disk
    cell_rows = [r for r in rows if r["kind"] == "cell"]
    if cells:
        _cell_reports(out, cell_rows)
    page = Page(f"apo-local sweep: {out.resolve().name}", plots_dir=out / "plots")
    done = sum(r["status"] == "done" for r in cell_rows)
    _optimizer_size(page, out, cell_rows)
    page.h("Results", anchor="results")
    if done:
        page.plot("cells.png", P.sweep_cells_plot(cell_rows), "test metric per cell")
    _results(page, out, cell_rows, rows)
    page.p("Tables also in results.csv (kind = cell / mean / std) and results.md.", "meta")
    target = out / "report.html"
    target.write_text(page.render(f"{done} of {len(cell_rows)} cells done"), encoding="utf-8")
    return target


def _cell_reports(out: Path, cell_rows: list[dict]) -> None:
    for r in cell_rows:
        d = out / r["cell"]
        if (d / "config.yaml").is_file():
            try:
                write_run_report(d)
            except Exception as exc:  # one bad cell must not stop the sweep's page
                log.warning("report for %s failed: %s", d, exc)


def _optimizer_size(page: Page, out: Path, cell_rows: list[dict]) -> None:
    size_rows = optimizer_size_rows(cell_rows, group_columns(cell_rows), out)
    if not size_rows:
        return
    page.h("Optimizer size", anchor="optimizer-size")
    page.p(
        "Same task and target, different optimizer models: test metric of the prompt each search selected "
        "(initial prompt dotted, best constant answer dashed) and optimizer tokens, mean ± std over seeds; each "
        "larger optimizer against the series' smallest on the same seeds and test rows.",
        "meta",
    )
    page.plot("optimizer-size.png", optimizer_size_plot(size_rows), "optimizer size comparison")
    page.table(
        [
            "series",
            "optimizer",
            "params",
            "n",
            "test selected",
            "± std",
            "95% CI",
            "test initial",
            "test constant",
            "vs smallest: diff",
            "diff 95% CI",
            "optimizer tokens",
            "T s",
            "O s",
            "truncated",
            "accepted share",
            "wall s",
        ],
        [
            [
                r["series"],
                r["optimizer"],
                human_params(r["parameters"]),
                r["n"],
                r["test_selected"],
                r["test_selected_std"],
                interval(r.get("test_ci")),
                r["test_initial"],
                r["test_constant"],
                r.get("diff"),
                interval(r.get("diff_ci")),
                r["optimizer_tokens"],
                r["target_seconds"],
                r["optimizer_seconds"],
                r["replies_truncated"],
                r["accepted_share"],
                r["wall_seconds"],
            ]
            for r in size_rows
        ],
    )


def _results(page: Page, out: Path, cell_rows: list[dict], rows: list[dict]) -> None:
    shown = shown_columns(cell_rows)

    def link(r):
        rep = out / r["cell"] / "report.html"
        return f'<a href="{esc(r["cell"])}/report.html">{esc(r["cell"])}</a>' if rep.is_file() else esc(r["cell"])

    header = ["cell", "status", *shown, "seed", *(SHORT.get(c, c) for c in VALUE_COLUMNS)]
    body = [
        [
            link(r),
            esc(r["status"]),
            *(esc(r.get(k)) for k in shown),
            esc(r.get("seed")),
            *(r.get(c) for c in VALUE_COLUMNS),
        ]
        for r in cell_rows
    ]
    page.table(header, body, raw_cols=set(range(len(shown) + 3)))
    means = [a for a in rows if a["kind"] == "mean"]
    stds = [a for a in rows if a["kind"] == "std"]
    if means:
        page.h("Mean ± std over seeds", 3)
        page.table(
            [*shown, "n", *(SHORT.get(c, c) for c in VALUE_COLUMNS)],
            [
                [
                    *("" if m.get(k) is None else str(m.get(k)) for k in shown),
                    m["n"],
                    *(
                        (m.get(c) or "") if c.endswith("_ci") else plus_minus(m.get(c), s.get(c), c)
                        for c in VALUE_COLUMNS
                    ),
                ]
                for m, s in zip(means, stds)
            ],
            ["agg"] * len(means),
        )
