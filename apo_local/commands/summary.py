"""The table ``apo-local optimize`` prints at the end of a run (stdout): the headline sentence, the selected,
initial, constant and best-of-beam rows with their intervals, the paired lines, power, attribution and the time
line (``summary_lines``)."""

from __future__ import annotations

import click

from apo_local.run.baseline_lines import lean_warnings, vs_constant_line


def summary_lines(result) -> list[str]:
    """The results table: the headline sentence first; the prompt the search selected (without the test split),
    its test score with its 95% interval; the initial prompt; the best constant answer (classification);
    best-of-beam last, labelled as picked with the test split. Then the paired differences selected - initial
    and selected - best constant, the power line and any prevalence warning."""
    from apo_local.run.baselines import constant_instruction
    from apo_local.run.headline import headline
    from apo_local.stats import fmt_ci

    m = result.metric
    estimate = {b["text"]: b["estimate"] for b in result.beam}
    constant = result.constant_baselines or {}
    rows = [
        (f"selected ({result.selected_by})", result.selected_prompt, result.selected_test),
        ("initial", result.initial_prompt, result.initial_test),
    ]
    if constant.get("best") is not None:
        label = constant["best"]
        majority = " = train majority" if label == constant.get("majority_label") else ""
        rows.append((f"best constant answer{majority}", constant_instruction(label), constant["by_label"][label]))
    rows.append(("best of beam (picked on test: optimistic)", result.best_prompt, result.best_test))
    acc = "test acc (= micro-F1)" if m in ("f1", "macro_f1") else "test accuracy"
    width = max(44, *(len(name) for name, _, _ in rows))
    lines = [
        result.headline or headline(result.to_dict()),
        "",
        f"{'':{width}} {'train est.':>10} {'test ' + m + ' [95% CI]':>24} {acc:>24}  prompt",
    ]
    for name, text, test in rows:
        short = " ".join(text.split())
        short = short if len(short) <= 80 else short[:79] + "…"
        est = estimate.get(text) if name.startswith(("selected", "best of beam")) else None
        ci = test.get("ci") or {}
        acc_cell = fmt_ci(test["metrics"]["accuracy"], ci.get("accuracy") or ci.get(m)) if m != "accuracy" else ""
        lines.append(
            f"{name:{width}} {'-' if est is None else f'{est:.3f}':>10} "
            f"{fmt_ci(test['metrics'][m], ci.get(m)):>24} {acc_cell:>24}  {short}"
        )
    return lines + _paired_lines(result, constant)


def _paired_lines(result, constant: dict) -> list[str]:
    """Selected minus initial and minus the best constant answer, power, attribution and the lean warnings."""
    from apo_local.run.headline import power_line
    from apo_local.stats import fmt_diff

    m, lines = result.metric, []
    paired = result.selected_vs_initial
    if paired:
        line = f"selected - initial: {m} {fmt_diff(paired[m])} (paired bootstrap p={paired[m]['p']:.3f}"
        if "balanced_accuracy" in paired:
            line += f"; balanced accuracy {fmt_diff(paired['balanced_accuracy'])}"
        mc = paired["mcnemar"]
        lines.append(
            line + f"; McNemar p={mc['p']:.3f}, {mc['only_a']} rows only selected right, "
            f"{mc['only_b']} only initial right; n={paired['n']})"
        )
    vs_constant = result.selected_vs_constant
    if vs_constant and constant.get("best") is not None:
        lines.append(vs_constant_line("selected", constant["best"], m, vs_constant))
    if paired:
        lines.append(power_line(paired["power"], paired["n"]))
    if result.attribution:
        from apo_local.run.attribution import attribution_line

        lines.append(attribution_line(result.attribution))
    kept = result.selected_prompt == result.initial_prompt  # then the lean is the target's, not the search's doing
    why = (
        "the target leans this way with the initial prompt, which the search kept"
        if kept
        else "a metric can rise this way while the classifier gets worse"
    )
    lines.extend(lean_warnings(result.selected_test, "the selected prompt", "test rows", why))
    lines.extend(
        result.warnings
    )  # e.g. a validation split too small to tell prompts apart (run/plan.py: RunPlan.warnings)
    return lines


def time_line(t: dict) -> str:
    """Total wall time and its parts (model load, search, final test evaluation, the rest)."""
    if "total" not in t:  # a run directory written before the parts were recorded
        return f"time: search {t.get('seconds', 0)} s"
    parts = [
        ("model load", t["model_load"]),
        ("search", t["search"]),
        ("final test", t["final_test"]),
        ("other", t.get("other", 0)),
    ]
    return f"time: total {t['total']} s = " + " + ".join(f"{name} {sec} s" for name, sec in parts)


# -- models ---------------------------------------------------------------------------------


def print_summary(result, out) -> None:
    click.echo("")
    for line in summary_lines(result):
        click.echo(line)
    click.echo("")
    for role, u in result.usage.items():
        click.echo(
            f"{role:9} calls={u['calls']:<5} prompts={u['prompts']:<6} in_tokens={u['input_tokens']:<8} "
            f"out_tokens={u['output_tokens']:<7} cache_hits={result.time['cache_hits'][role]}"
        )
    click.echo(f"rounds={result.rounds_completed} stop={result.stop_reason} faults={result.faults or 'none'}")
    if result.replies:
        from apo_local.run.result import replies_line

        click.echo(replies_line(result.replies))
    click.echo(time_line(result.time))
    if out:
        click.echo(f"run directory: {out}")
