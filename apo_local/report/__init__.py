"""Reports people look at: ``apo-local report RUN_DIR_OR_SWEEP_DIR``.

Writes ``report.html`` (self-contained: plots are embedded, nothing is fetched; it opens offline)
and the same plots as PNG files under ``plots/``.

Run directory: score per round with the initial prompt as a baseline; the candidate lineage
(parent -> child, operator, gradient text); the initial -> best prompt diff; predicted vs true label
distribution and confusion matrix for classification, with a warning when a class is predicted far
below its true share ("prevalence hacking"); calls, tokens and time by role and phase; prompt
length per round. Sweep directory: the results table (cells and mean +- std per group), test
metric per cell, and the optimizer-size view when the grid varies the optimizer model.

Modules: ``data`` (reading a run directory), ``plots`` (matplotlib, Agg), ``html`` (the page).
"""

from __future__ import annotations

import logging
from pathlib import Path

from apo_local.errors import ApoError

log = logging.getLogger("apo_local")

__all__ = ["write_report", "write_run_report", "write_sweep_report"]


def _need_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ApoError("reports need matplotlib: pip install matplotlib (or reinstall apo-local)") from None


def write_report(path: str | Path, *, cells: bool = False) -> Path:
    """Report for a run directory or a sweep directory (``cells``: also each cell's own report)."""
    p = Path(path)
    if not p.is_dir():
        raise ApoError(f"{p} is not a directory")
    _need_matplotlib()
    from apo_local.sweep import MANIFEST

    if (p / MANIFEST).is_file():
        return write_sweep_report(p, cells=cells)
    return write_run_report(p)


def _save(out: Path, name: str, png: bytes) -> bytes:
    plots = out / "plots"
    plots.mkdir(exist_ok=True, mode=0o700)
    (plots / name).write_bytes(png)
    return png


def write_run_report(path: str | Path) -> Path:
    from apo_local.report import data as D
    from apo_local.report import plots as P
    from apo_local.report.html import Page, diff_markup, esc

    run = D.load_run(path)
    out = Path(path)
    res = run.results
    m = run.metric
    cfg = run.config
    opt_model = (cfg.get("optimizer") or {}).get("model")
    tgt_model = (cfg.get("target") or {}).get("model")
    page = Page(f"apo-local run: {out.resolve().name}")
    search = cfg.get("search") or {}
    sub = (f"task {cfg.get('task')} · proposer {search.get('proposer', 'protegi')} · selector "
           f"{(cfg.get('selection') or {}).get('selector')} · target {tgt_model or 'default'} · optimizer "
           f"{opt_model or '= target'} · seed {cfg.get('seed')} · rounds {len(run.rounds)}/{search.get('rounds')}")

    if res:
        init, best = res["initial_test"]["metrics"][m], res["best_test"]["metrics"][m]
        page.h("Summary")
        page.table(["", f"test {m}", "accuracy", "n", "prompt"], [
            ["initial", init, res["initial_test"]["metrics"].get("accuracy"), res["initial_test"]["metrics"].get("n"),
             res["initial_prompt"]],
            ["best", best, res["best_test"]["metrics"].get("accuracy"), res["best_test"]["metrics"].get("n"),
             res["best_prompt"]],
            ["selected (by train estimate)", res["selected_test"]["metrics"][m],
             res["selected_test"]["metrics"].get("accuracy"), res["selected_test"]["metrics"].get("n"),
             res["selected_prompt"]]])
        page.p(f"stop: {res['stop_reason']} · rounds completed: {res['rounds_completed']} · wall: "
               f"{res.get('time', {}).get('seconds')} s · faults: "
               + (", ".join(f"{k}={v}" for k, v in res.get("faults", {}).items()) or "none"), "meta")
    else:
        page.p("This run has not finished (no results.json): rounds and trace so far.", "warn")

    page.h("Score per round", anchor="scores")
    page.img(_save(out, "score-per-round.png", P.score_plot(D.score_per_round(run))), "score per round")

    cls = D.classification(run)
    if cls:
        page.h("Predicted vs true labels (test)", anchor="labels")
        for w in cls["warnings"]:
            page.raw(f'<div class="warn">⚠ Class <b>{esc(w["label"])}</b> is suppressed by the {esc(w["prompt"])} '
                     f'prompt: predicted for {w["predicted_share"]:.0%} of test examples, true share '
                     f'{w["true_share"]:.0%} (below {D.SUPPRESSION_RATIO:.0%} of its true share). A metric such as F1 can '
                     f'rise this way ("prevalence hacking") while the classifier gets worse.</div>')
        if not cls["warnings"]:
            page.p("No class is predicted far below its true share.", "ok")
        page.img(_save(out, "label-distribution.png", P.distribution_plot(cls)), "label distribution")
        page.table(["label", "true", "initial prompt", "best prompt"],
                   [[lab, cls["true"].get(lab, 0), cls["initial"].get(lab, 0), cls["best"].get(lab, 0)]
                    for lab in cls["labels"]])
        if cls["confusion"]:
            page.img(_save(out, "confusion-best.png", P.confusion_plot(cls["confusion"], cls["labels"])),
                     "confusion matrix, best prompt")
        else:
            page.p("No confusion matrix in results.json (run made before it was recorded).", "meta")
        if cls["initial_confusion"]:
            page.img(_save(out, "confusion-initial.png", P.confusion_plot(
                cls["initial_confusion"], cls["labels"], "Confusion matrix (initial prompt, test)")),
                "confusion matrix, initial prompt")

    if res:
        page.h("Initial → best prompt", anchor="diff")
        page.raw(diff_markup(D.prompt_diff(res["initial_prompt"], res["best_prompt"])))

    nodes = D.lineage(run)
    if nodes:
        page.h("Candidate lineage", anchor="lineage")
        page.img(_save(out, "lineage.png", P.lineage_plot(nodes)), "candidate lineage tree")
        rows, classes = [], []
        for n in nodes:
            grad = n["gradient"] or ""
            grad_cell = (f'<details title="{esc(grad)}"><summary>{esc(grad[:80])}{"…" if len(grad) > 80 else ""}'
                         f'</summary><div class="prompt">{esc(grad)}</div></details>') if grad else ""
            op = n["operator"] + (f" (kept in round {', '.join(map(str, n['kept_rounds']))})" if n["kept_rounds"] else "")
            rows.append([f'<span title="{esc(n["text"])}">{esc(n["id"])}</span>', n["round"], esc(n["parent"] or ""),
                         f'<span class="op-{esc(n["operator"])}">{esc(op)}</span>',
                         f'<span class="fate-{esc(n["fate"])}">{esc(n["fate"])}</span>',
                         "" if n["estimate"] is None else f"{n['estimate']:.3f}", str(n["pulls"] or ""),
                         f'<div class="prompt">{esc(n["text"])}</div>', grad_cell])
            classes.append("")
        page.p("Hover an id for its prompt; open a gradient for the optimizer's full critique that led to the edit.",
               "meta")
        page.table(["id", "round", "parent", "operator", "fate", "estimate", "pulls", "prompt", "gradient"], rows,
                   classes, raw_cols=set(range(9)))

    usage = D.usage_by_role_phase(run)
    if usage:
        page.h("Calls, tokens and time by role and phase", anchor="usage")
        page.img(_save(out, "usage.png", P.usage_plot(usage)), "usage by role and phase")
        page.table(["role", "phase", "calls", "prompts", "input tokens", "output tokens", "cache hits", "seconds"],
                   [[u["role"], u["phase"], u["calls"], u["prompts"], u["input_tokens"], u["output_tokens"],
                     u["cache_hits"], round(u["seconds"], 1)] for u in usage])
        if res and res.get("usage"):
            page.p("Totals (results.json): " + "; ".join(
                f"{role}: " + ", ".join(f"{k}={v:,}" for k, v in u.items()) for role, u in res["usage"].items()), "meta")
        flt = D.faults(run)
        if flt:
            page.table(["fault", "phase", "count"], [[f["event"], f["phase"], f["count"]] for f in flt])

    lengths = D.prompt_lengths(run)
    if lengths:
        page.h("Prompt length per round", anchor="length")
        page.img(_save(out, "prompt-length.png", P.prompt_length_plot(lengths)), "prompt length per round")

    target = out / "report.html"
    target.write_text(page.render(sub), encoding="utf-8")
    return target


def write_sweep_report(path: str | Path, *, cells: bool = False) -> Path:
    from apo_local import sweep as S
    from apo_local.report import plots as P
    from apo_local.report.html import Page, esc

    out = Path(path)
    rows = S.write_tables(out)  # refresh results.csv/.md from the cells on disk
    cell_rows = [r for r in rows if r["kind"] == "cell"]
    if cells:
        for r in cell_rows:
            d = out / r["cell"]
            if (d / "config.yaml").is_file():
                try:
                    write_run_report(d)
                except Exception as exc:  # one bad cell must not stop the sweep's page
                    log.warning("report for %s failed: %s", d, exc)
    page = Page(f"apo-local sweep: {out.resolve().name}")
    done = sum(r["status"] == "done" for r in cell_rows)
    keys = S.group_columns(cell_rows)
    shown = [k for k in keys if len({str(r.get(k)) for r in cell_rows}) > 1 or k in ("task", "target", "optimizer")]
    vcols = ["test_initial", "test_best", "test_gain", "rounds", "target_calls", "target_prompts", "target_input_tokens",
             "optimizer_calls", "optimizer_input_tokens", "optimizer_output_tokens", "wall_seconds"]

    size_rows = S.optimizer_size_rows(cell_rows)
    if size_rows:
        page.h("Optimizer size", anchor="optimizer-size")
        page.p("Same task and target, different optimizer models: test metric of the best prompt (initial prompt "
               "dotted) and optimizer tokens, mean ± std over seeds.", "meta")
        page.img(_save(out, "optimizer-size.png", P.optimizer_size_plot(size_rows)), "optimizer size comparison")
        page.table(["series", "optimizer", "params", "n", "test best", "± std", "test initial", "gain",
                    "optimizer tokens", "± std", "wall s"],
                   [[r["series"], r["optimizer"], S.human_params(r["parameters"]), r["n"], r["test_best"],
                     r["test_best_std"], r["test_initial"], r["test_gain"], r["optimizer_tokens"],
                     r["optimizer_tokens_std"], r["wall_seconds"]] for r in size_rows])

    page.h("Results", anchor="results")
    if done:
        page.img(_save(out, "cells.png", P.sweep_cells_plot(cell_rows)), "test metric per cell")

    def link(r):
        rep = out / r["cell"] / "report.html"
        return f'<a href="{esc(r["cell"])}/report.html">{esc(r["cell"])}</a>' if rep.is_file() else esc(r["cell"])

    header = ["cell", "status", *shown, "seed", *(S.SHORT.get(c, c) for c in vcols)]
    body = [[link(r), esc(r["status"]), *(esc(r.get(k)) for k in shown), esc(r.get("seed")),
             *(r.get(c) for c in vcols)] for r in cell_rows]
    page.table(header, body, raw_cols=set(range(len(shown) + 3)))
    means = [a for a in rows if a["kind"] == "mean"]
    stds = [a for a in rows if a["kind"] == "std"]
    if means:
        page.h("Mean ± std over seeds", 3)
        page.table([*shown, "n", *(S.SHORT.get(c, c) for c in vcols)],
                   [[*(fmt_(m.get(k)) for k in shown), m["n"], *(S._pm(m.get(c), s.get(c), c) for c in vcols)]
                    for m, s in zip(means, stds)], ["agg"] * len(means))
    page.p("Tables also in results.csv (kind = cell / mean / std) and results.md.", "meta")
    target = out / "report.html"
    target.write_text(page.render(f"{done} of {len(cell_rows)} cells done"), encoding="utf-8")
    return target


def fmt_(v) -> str:
    return "" if v is None else str(v)
