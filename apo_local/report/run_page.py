"""The report page of one run directory: one function per section, in page order."""

from __future__ import annotations

from pathlib import Path

from apo_local.report import data as D
from apo_local.report import plots as P
from apo_local.report.front import front_plot, length_front
from apo_local.report.html import Page, diff_markup, esc
from apo_local.run.run_dir import is_compare_dir


def write_run_report(path: str | Path) -> Path:
    run = D.load_run(path)
    out = Path(path)
    here = out.resolve()
    name = f"{here.parent.name}/{here.name}" if is_compare_dir(here.parent.parent) else here.name  # METHOD/seed-N
    page = Page(f"apo-local run: {name}", plots_dir=out / "plots")
    _summary(page, run)
    page.h("Score per round", anchor="scores")
    page.plot("score-per-round.png", P.score_plot(D.score_per_round(run)), "score per round")
    _labels(page, run)
    if run.results:
        page.h("Initial → selected prompt", anchor="diff")
        page.raw(diff_markup(D.prompt_diff(run.results["initial_prompt"], D.chosen(run.results)[0])))
    _lineage(page, run)
    _attribution(page, run)
    _usage(page, run)
    _replies(page, run)
    lengths = D.prompt_lengths(run)
    if lengths:
        page.h("Prompt length per round", anchor="length")
        page.plot("prompt-length.png", P.prompt_length_plot(lengths), "prompt length per round")
    front = length_front(run.results)
    if front:
        page.h("Score vs prompt length (Pareto front)", anchor="front")
        page.plot("length-front.png", front_plot(front), "score vs prompt length, Pareto front")
    target = out / "report.html"
    target.write_text(page.render(_subtitle(run)), encoding="utf-8")
    return target


def _replies(page: Page, run: D.RunData) -> None:
    """What became of the optimizer's replies: counts (results.json) and every reason (trace.jsonl)."""
    summary, rows = (run.results or {}).get("replies"), D.reply_outcomes(run)
    if not summary and not rows:
        return
    page.h("Optimizer replies and rejected candidates", anchor="replies")
    if summary:
        from apo_local.run.result import replies_line

        page.p(replies_line(summary), "meta")
    if rows:
        page.table(
            ["outcome", "step / rule", "reason", "count", "example"],
            [[r["event"], r["where"], r["reason"], r["count"], r["example"]] for r in rows],
        )


def _subtitle(run: D.RunData) -> str:
    cfg = run.config
    search = cfg.get("search") or {}
    models = D.run_models(run)  # the resolved models (a run from before they were recorded: the config's names)
    target = D.model_name(models.get("target")) or (cfg.get("target") or {}).get("model") or "registry default"
    same = models.get("optimizer") == models.get("target") if models else not (cfg.get("optimizer") or {}).get("model")
    optimizer = (
        "= target" if same else D.model_name(models.get("optimizer")) or (cfg.get("optimizer") or {}).get("model")
    )
    return (
        f"task {cfg.get('task')} · proposer {search.get('proposer', 'protegi')} · selector "
        f"{(cfg.get('selection') or {}).get('selector')} · target {target}"
        f" · optimizer {optimizer} · seed {cfg.get('seed')} · rounds "
        f"{len(run.rounds)}/{search.get('rounds')}"
    )


def _summary(page: Page, run: D.RunData) -> None:
    from apo_local.stats import fmt_ci

    res, m = run.results, run.metric
    if not res:
        page.p("This run has not finished (no results.json): rounds and trace so far.", "warn")
        return

    def row(name: str, ev: dict, prompt: str) -> list:
        ci = ev.get("ci") or {}
        return [
            name,
            fmt_ci(ev["metrics"][m], ci.get(m)),
            fmt_ci(ev["metrics"].get("accuracy"), ci.get("accuracy")),
            ev["metrics"].get("n"),
            prompt,
        ]

    page.h("Summary")
    page.p(_headline(res), "warn" if "over a constant answer:" in _headline(res) else "meta")
    rows = [
        row(f"selected ({res.get('selected_by', 'selection estimate')})", res["selected_test"], res["selected_prompt"]),
        row("initial", res["initial_test"], res["initial_prompt"]),
    ]
    constant = res.get("constant_baselines") or {}
    if constant.get("best") is not None:
        from apo_local.run.baselines import constant_instruction

        majority = " = train majority" if constant["best"] == constant.get("majority_label") else ""
        rows.append(
            row(
                f"best constant answer{majority}",
                constant["by_label"][constant["best"]],
                constant_instruction(constant["best"]),
            )
        )
    rows.append(row("best of beam (picked on test: optimistic)", res["best_test"], res["best_prompt"]))
    page.table(["", f"test {m} [95% CI]", "accuracy (= micro-F1) [95% CI]", "n", "prompt"], rows)
    _paired_lines(page, res, m, constant)
    from apo_local.run.result import wall_seconds

    page.p(
        f"stop: {res['stop_reason']} · rounds completed: {res['rounds_completed']} · wall: {wall_seconds(res)} s · "
        "faults: " + (", ".join(f"{k}={v}" for k, v in res.get("faults", {}).items()) or "none"),
        "meta",
    )


def _paired_lines(page: Page, res: dict, m: str, constant: dict) -> None:
    """The selected prompt minus the initial one and minus the best constant answer, on the same test rows."""
    from apo_local.run.headline import power_line
    from apo_local.stats import fmt_diff

    paired = res.get("selected_vs_initial") or {}
    if paired.get(m):
        d, mc = paired[m], paired["mcnemar"]
        balanced = paired.get("balanced_accuracy")
        page.p(
            f"selected − initial on the same {paired['n']} test rows: {m} {fmt_diff(d)} (paired bootstrap)"
            + (f", balanced accuracy {fmt_diff(balanced)}" if balanced else "")
            + f", McNemar p = {mc['p']:.3g}. "
            + power_line(paired["power"], paired["n"]),
            "meta",
        )
    vs_constant = (res.get("selected_vs_constant") or {}).get(m)
    if vs_constant and constant.get("best") is not None:
        page.p(
            f"selected − always {constant['best']!r} on the same rows: {m} {fmt_diff(vs_constant)} (paired bootstrap).",
            "meta",
        )


def _headline(res: dict) -> str:
    from apo_local.run.headline import headline

    return res.get("headline") or headline(res)


def _labels(page: Page, run: D.RunData) -> None:
    cls = D.classification(run)
    if not cls:
        return
    page.h("Predicted vs true labels (test)", anchor="labels")
    for w in cls["warnings"]:
        page.raw(
            f'<div class="warn">⚠ Class <b>{esc(w["label"])}</b> is suppressed by the {esc(w["prompt"])} '
            f"prompt: predicted for {w['predicted_share']:.0%} of test examples, true share "
            f"{w['true_share']:.0%} (below {D.SUPPRESSION_RATIO:.0%} of its true share). A metric such as F1 can "
            f'rise this way ("prevalence hacking") while the classifier gets worse.</div>'
        )
    if not cls["warnings"]:
        page.p("No class is predicted far below its true share.", "ok")
    page.plot("label-distribution.png", P.distribution_plot(cls), "label distribution")
    page.table(
        ["label", "true", "initial prompt", "selected prompt"],
        [
            [lab, cls["true"].get(lab, 0), cls["initial"].get(lab, 0), cls["selected"].get(lab, 0)]
            for lab in cls["labels"]
        ],
    )
    if cls["confusion"]:
        page.plot(
            "confusion-selected.png",
            P.confusion_plot(cls["confusion"], cls["labels"]),
            "confusion matrix, selected prompt",
        )
    else:
        page.p("No confusion matrix in results.json (run made before it was recorded).", "meta")
    if cls["initial_confusion"]:
        page.plot(
            "confusion-initial.png",
            P.confusion_plot(cls["initial_confusion"], cls["labels"], "Confusion matrix (initial prompt, test)"),
            "confusion matrix, initial prompt",
        )


def _lineage_row(n: dict) -> list[str]:
    grad = n["gradient"] or ""
    grad_cell = (
        (
            f'<details title="{esc(grad)}"><summary>{esc(grad[:80])}{"…" if len(grad) > 80 else ""}'
            f'</summary><div class="prompt">{esc(grad)}</div></details>'
        )
        if grad
        else ""
    )
    op = n["operator"] + (f" (kept in round {', '.join(map(str, n['kept_rounds']))})" if n["kept_rounds"] else "")
    fate_class = str(n["fate"]).split(":")[0].replace(" ", "-")
    return [
        f'<span title="{esc(n["text"])}">{esc(n["id"])}</span>',
        n["round"],
        esc(n["parent"] or ""),
        f'<span class="op-{esc(n["operator"])}">{esc(op)}</span>',
        f'<span class="fate-{esc(fate_class)}">{esc(n["fate"])}</span>',
        "" if n["estimate"] is None else f"{n['estimate']:.3f}",
        str(n["pulls"] or ""),
        f'<div class="prompt">{esc(n["text"])}</div>',
        grad_cell,
    ]


def _lineage(page: Page, run: D.RunData) -> None:
    nodes = D.lineage(run)
    if not nodes:
        return
    page.h("Candidate lineage", anchor="lineage")
    page.plot("lineage.png", P.lineage_plot(nodes), "candidate lineage tree")
    page.p(
        "Hover an id for its prompt; open a gradient for the optimizer's full critique that led to the edit.", "meta"
    )
    page.table(
        ["id", "round", "parent", "operator", "fate", "estimate", "pulls", "prompt", "gradient"],
        [_lineage_row(n) for n in nodes],
        [""] * len(nodes),
        raw_cols=set(range(9)),
    )


def _attribution(page: Page, run: D.RunData) -> None:
    """Which part of the selected prompt helped (results.json "attribution"): each lineage step's gain over its
    parent and each unit's contribution, with paired 95% intervals on the test and validation rows."""
    from apo_local.run.attribution import attribution_line

    a = (run.results or {}).get("attribution")
    if not a:
        return
    page.h("Edit attribution", anchor="attribution")
    page.p(
        attribution_line(a) + ". Gains are paired bootstrap 95% intervals on the same rows "
        f"({a['rows']['test']} test, {a['rows']['validation']} validation); a step's gain is its prompt minus its "
        "parent's, a unit's contribution the selected prompt minus the selected prompt without it. 'Distinguishable "
        "from 0' holds the family-wise error at 5% (Holm over every test gain of both tables); the validation rows "
        "chose this prompt, so validation gains were used for selection (optimistic).",
        "meta",
    )

    _attribution_steps(page, a)
    _attribution_units(page, a)


def _zero(g: dict | None) -> str:
    """Whether a gain is distinguishable from zero (family-wise), "-" where there is none."""
    from apo_local.run.attribution import is_flagged

    return "-" if not g else "yes" if is_flagged(g) else "no"


def _attribution_steps(page: Page, a: dict) -> None:
    from apo_local.run.attribution import fmt_gain

    zero, texts = _zero, {n["id"]: n["text"] for n in a["lineage"]}
    page.table(
        [
            "step",
            "round",
            "operator",
            "id",
            "parent",
            "gradient",
            "test gain [95% CI]",
            "validation gain [95% CI]",
            "distinguishable from 0 (family-wise)",
            "prompt",
        ],
        [
            [
                k,
                s["round"],
                s["operator"],
                s["id"],
                s["parent"] or "",
                s.get("gradient") or "",
                fmt_gain(s["test"]),
                fmt_gain(s["validation"]),
                zero(s["test"]),
                texts.get(s["id"], ""),
            ]
            for k, s in enumerate(a["steps"], 1)
        ]
        or [
            [
                "-",
                "-",
                "-",
                a["selected_id"],
                "",
                "",
                "no lineage steps: the selected prompt is the initial one",
                "",
                "",
                texts.get(a["selected_id"], ""),
            ]
        ],
    )


def _attribution_units(page: Page, a: dict) -> None:
    from apo_local.run.attribution import fmt_gain

    zero = _zero
    page.table(
        [
            "unit",
            "kind",
            "text",
            "test contribution [95% CI]",
            "validation contribution [95% CI]",
            "distinguishable from 0 (family-wise)",
        ],
        [
            [u["index"], u["kind"], u["text"], fmt_gain(u["test"]), fmt_gain(u["validation"]), zero(u["test"])]
            for u in a["units"]
        ],
    )


def _usage(page: Page, run: D.RunData) -> None:
    usage = D.usage_by_role_phase(run)
    if not usage:
        return
    res = run.results
    page.h("Calls, tokens and time by role and phase", anchor="usage")
    page.plot("usage.png", P.usage_plot(usage), "usage by role and phase")
    page.table(
        ["role", "phase", "calls", "prompts", "input tokens", "output tokens", "cache hits", "seconds"],
        [
            [
                u["role"],
                u["phase"],
                u["calls"],
                u["prompts"],
                u["input_tokens"],
                u["output_tokens"],
                u["cache_hits"],
                round(u["seconds"], 1),
            ]
            for u in usage
        ],
    )
    if res and res.get("usage"):
        page.p(
            "Totals (results.json): "
            + "; ".join(
                f"{role}: " + ", ".join(f"{k}={v:,}" for k, v in u.items()) for role, u in res["usage"].items()
            ),
            "meta",
        )
    flt = D.faults(run)
    if flt:
        page.table(["fault", "phase", "count"], [[f["event"], f["phase"], f["count"]] for f in flt])
