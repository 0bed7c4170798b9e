"""Edit attribution: which part of the selected prompt actually helped.

Two views of the selected prompt, each with paired bootstrap intervals on the same rows (validation and test):

* its **lineage**: the chain of candidates from the initial prompt (the root) to the selected one, read from the
  rounds' candidate records (``rounds/round-NN.json``: id, parent, operator, gradient, text); each step's gain is
  the step's prompt minus its parent's, with the gradient it came from;
* a **sentence ablation**: the selected prompt with one unit removed, a unit being one sentence of the instruction
  or (for a prompt with a demonstrations block, ``tasks/demos.py``) one whole demonstration; a unit's contribution
  is the selected prompt minus the prompt without it.

Every prompt of both views is scored in one ``Scorer.evaluate_many`` call on validation + test rows (the scorer's
memo and the engine's result cache answer what the search already scored). The arithmetic below works on plain
label lists, so tests drive it without an engine; the intervals come from ``SplitStats.paired`` (``stats.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from types import SimpleNamespace

from apo_local.run.headline import SplitStats
from apo_local.stats import fmt_diff
from apo_local.tasks.demos import join_prompt, split_prompt

MAX_UNITS = 16  # units ablated at most (instruction sentences first, then demonstrations); the estimate's bound
# a sentence ends at . ! or ? (a closing quote or bracket may follow) before blanks and a word that is not lower
# case, except after one letter or digit ("e.g.", "1."); a line break always ends one
_BOUNDARY = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))(?<!\b\w\.)[ \t]+(?![a-z])|[ \t]*\n\s*")


# -- the lineage ------------------------------------------------------------------------------------------------


def candidate_records(rounds: Iterable[dict]) -> dict[str, dict]:
    """id -> the candidate's record, from round files (``{"round", "candidates": [...]}``), first seen wins."""
    out: dict[str, dict] = {}
    for rnd in rounds:
        for c in rnd.get("candidates", []):
            out.setdefault(c["id"], c)
    return out


def lineage(records: dict[str, dict], selected: str, initial: str) -> tuple[list[dict], bool]:
    """The selected prompt's ancestry, root first: [{id, round, operator, parent, gradient, text}], and whether it
    reaches the initial prompt (a parent missing from the records ends the walk early)."""
    from apo_local.search.state import candidate_id

    by_text = {c["text"]: c for c in records.values()}
    node = by_text.get(selected) or records.get(candidate_id(selected))
    chain: list[dict] = []
    seen: set[str] = set()
    while node is not None and node["id"] not in seen:
        seen.add(node["id"])
        chain.append({k: node.get(k) for k in ("id", "round", "operator", "parent", "gradient", "text")})
        if node["text"] == initial or not node.get("parent"):
            break
        node = records.get(node["parent"])
    if not chain:  # not in the records (e.g. the initial prompt of a run with no round): the root alone
        chain = [
            {
                "id": candidate_id(selected),
                "round": 0,
                "operator": "initial",
                "parent": None,
                "gradient": None,
                "text": selected,
            }
        ]
    chain.reverse()
    return chain, chain[0]["text"] == initial


# -- the sentence ablation --------------------------------------------------------------------------------------


def sentences(text: str) -> list[str]:
    """The sentences of an instruction, each with the blanks after it (joined back they give ``text``)."""
    out, start = [], 0
    for m in _BOUNDARY.finditer(text):
        if m.start() > start:
            out.append(text[start : m.end()])
            start = m.end()
    if start < len(text):
        out.append(text[start:])
    merged: list[str] = []  # a piece of blanks only (leading blanks) joins the next sentence
    for piece in out:
        if merged and not merged[-1].strip():
            merged[-1] += piece
        else:
            merged.append(piece)
    return [p for p in merged if p.strip()]


def ablations(text: str, max_units: int = MAX_UNITS) -> tuple[list[dict], int]:
    """([{index, kind, text, ablated}], units in all): the prompt with one unit removed, for the first
    ``max_units`` units (the instruction's sentences, then each demonstration as one unit)."""
    instruction, demos = split_prompt(text)
    parts = sentences(instruction)
    units = []
    for i, part in enumerate(parts):
        rest = "".join(parts[:i] + parts[i + 1 :]).strip()
        units.append({"kind": "sentence", "text": part.strip(), "ablated": join_prompt(rest, demos)})
    for i, d in enumerate(demos):
        units.append(
            {
                "kind": "demonstration",
                "text": f"{d['input']} -> {d['label']}",
                "ablated": join_prompt(instruction, demos[:i] + demos[i + 1 :]),
            }
        )
    return [{"index": n, **u} for n, u in enumerate(units[:max_units])], len(units)


def prompts_to_score(chain: list[dict], units: list[dict]) -> list[str]:
    """Every distinct prompt the attribution needs: the lineage (root first) and the ablated prompts."""
    return list(dict.fromkeys([n["text"] for n in chain] + [u["ablated"] for u in units]))


# -- gains with intervals ---------------------------------------------------------------------------------------


def gain(metric, golds: Sequence, a: Sequence, b: Sequence) -> dict | None:
    """``a`` minus ``b`` (predicted labels on the rows whose gold labels are ``golds``): the metric's difference,
    its paired 95% bootstrap interval, the bootstrap p-value and whether the interval excludes zero; None
    without rows."""
    if not golds:
        return None
    stats = SplitStats(metric, [SimpleNamespace(label=g) for g in golds])
    paired = stats.paired(
        *(SimpleNamespace(predictions=[SimpleNamespace(label=x) for x in labels]) for labels in (a, b))
    )
    d = paired[metric.name]
    lo, hi = d["ci"]
    return {
        "diff": d["diff"],
        "ci": [lo, hi],
        "p": d["p"],
        "n": len(golds),
        "excludes_zero": bool(not math.isnan(lo) and (lo > 0 or hi < 0)),
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control over all of ``pvalues``; nan stays nan)."""
    idx = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    out, running = [math.nan] * len(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * pvalues[i]))
        out[i] = running
    return out


def flag_family(gains: Sequence[dict | None], alpha: float = 0.05) -> None:
    """Mark each gain ``flagged`` when it is distinguishable from zero with the family-wise error rate of all of
    ``gains`` held at ``alpha`` (Holm over their bootstrap p-values; ``p_holm`` the adjusted p, ``family`` the
    family's size). Up to 16 units and the lineage steps each flagged at 5% would show a false "*" on most
    prompts whose edits did nothing."""
    family = [g for g in gains if g]
    for g, adjusted in zip(family, holm([g["p"] for g in family])):
        g.update(p_holm=adjusted, flagged=bool(adjusted < alpha and g["excludes_zero"]), family=len(family))


def attribute(
    metric,
    golds: dict[str, Sequence],
    labels: dict[str, dict[str, Sequence]],
    chain: list[dict],
    complete: bool,
    units: list[dict],
    total_units: int,
) -> dict:
    """The attribution record from predicted labels: ``golds`` split -> gold labels, ``labels`` prompt text ->
    split -> predicted labels (splits: validation, test). Steps: each lineage prompt against its parent; units:
    the selected prompt (the lineage's last) against it without the unit."""

    def on_splits(a: str, b: str) -> dict:
        return {s: gain(metric, golds[s], labels[a][s], labels[b][s]) for s in ("test", "validation")}

    selected = chain[-1]["text"]
    steps = [
        {k: node[k] for k in ("id", "round", "operator", "parent", "gradient")} | on_splits(node["text"], prev["text"])
        for prev, node in zip(chain, chain[1:])
    ]
    units = [{k: u[k] for k in ("index", "kind", "text")} | on_splits(selected, u["ablated"]) for u in units]
    flag_family([s["test"] for s in steps] + [u["test"] for u in units])  # the "*" flags: one family on test
    return {
        "metric": metric.name,
        "rows": {s: len(golds[s]) for s in ("validation", "test")},
        "selected_id": chain[-1]["id"],
        "lineage_complete": complete,
        "lineage": [
            {**node, "scores": {s: _score(metric, golds[s], labels[node["text"]][s]) for s in golds}} for node in chain
        ],
        "steps": steps,
        "units": units,
        "units_total": total_units,
        "summary": summary(steps),
    }


def _score(metric, golds: Sequence, predicted: Sequence) -> float | None:
    from apo_local.tasks.metrics import metric_value

    return metric_value(metric, list(zip(predicted, golds))) if golds else None


def summary(steps: list[dict]) -> dict:
    """How many lineage steps there are, how many test gains have an interval that excludes zero (each on its
    own), and how many are distinguishable from zero with family-wise control (``flagged``)."""
    return {
        "steps": len(steps),
        "steps_excluding_zero": sum(bool((s.get("test") or {}).get("excludes_zero")) for s in steps),
        "steps_flagged": sum(bool(is_flagged(s.get("test"))) for s in steps),
    }


def is_flagged(g: dict | None) -> bool:
    """A test gain distinguishable from zero with family-wise control (a run from before: its own interval)."""
    return bool(g) and bool(g.get("flagged", g.get("excludes_zero")))


def step_tally(attribution: dict | None) -> tuple[int | None, int | None]:
    """(accepted lineage steps, those whose test gain is distinguishable from zero with family-wise control) of a
    run's attribution; (None, None) for a run without one (made before attribution existed, or with
    ``evaluation.attribution: false``)."""
    if not attribution:
        return None, None
    s = summary(attribution.get("steps") or [])
    return s["steps"], s["steps_flagged"]


# -- the engine side --------------------------------------------------------------------------------------------


def compute(
    scorer, task, records: dict[str, dict], selected: str, initial: str, validation: Sequence, test: Sequence
) -> dict:
    """The attribution of ``selected``: every lineage and ablated prompt scored in ONE ``evaluate_many`` call
    on ``validation`` + ``test`` (the memo and the result cache answer what was scored before)."""
    chain, complete = lineage(records, selected, initial)
    units, total = ablations(selected)
    texts = prompts_to_score(chain, units)
    rows = list(validation) + list(test)
    nv = len(validation)
    labels = {}
    for ev in scorer.evaluate_many(texts, rows) if rows else []:
        predicted = [p.label for p in ev.predictions]
        labels[ev.instruction] = {"validation": predicted[:nv], "test": predicted[nv:]}
    golds = {"validation": [ex.label for ex in validation], "test": [ex.label for ex in test]}
    if not rows:
        labels = {t: {"validation": [], "test": []} for t in texts}
    return attribute(task.metric, golds, labels, chain, complete, units, total)


# -- lines for people -------------------------------------------------------------------------------------------


def fmt_gain(g: dict | None) -> str:
    return fmt_diff(g) if g else "-"


def _quote(text: str, n: int = 48) -> str:
    text = " ".join(text.split())
    return '"' + (text if len(text) <= n else text[: n - 1] + "…") + '"'


def _units_phrase(units: list[dict]) -> str:
    kinds = [u["kind"] for u in units]
    n_s, n_d = kinds.count("sentence"), kinds.count("demonstration")
    parts = [f"{n_s} sentence{'s' * (n_s != 1)}"] + ([f"{n_d} demonstration{'s' * (n_d != 1)}"] if n_d else [])
    return ", ".join(parts)


def largest_unit(units: list[dict]) -> tuple[dict | None, str]:
    """The unit with the largest contribution, picked on the validation rows (its test figure is then an honest
    estimate); without validation rows, picked on test and named so (optimistic)."""
    on_validation = [u for u in units if u.get("validation")]
    if on_validation:
        return max(on_validation, key=lambda u: u["validation"]["diff"]), "validation"
    tested = [u for u in units if u.get("test")]
    return max(tested, key=lambda u: u["test"]["diff"], default=None), "test"


def attribution_line(a: dict) -> str:
    """The CLI table's one line: the lineage steps' test gains, the largest unit contribution (picked on
    validation, with its test figure), and how many step gains are distinguishable from zero (family-wise)."""
    steps, units = a.get("steps") or [], a.get("units") or []
    if steps:
        head = (
            f"{len(steps)} step{'s' * (len(steps) != 1)} ("
            + ", ".join(f"{s['operator']} r{s['round']} {fmt_gain(s.get('test'))}" for s in steps)
            + ")"
        )
    else:
        head = "no lineage steps (the selected prompt is the initial prompt)"
    largest, picked = largest_unit(units)
    part = _units_phrase(units)
    if largest and picked == "validation":
        part += (
            f", largest on validation {fmt_gain(largest['validation'])} (test {fmt_gain(largest.get('test'))}) "
            f"{_quote(largest['text'])}"
        )
    elif largest:
        part += (
            f", largest on test (optimistic: picked on the rows it is reported on) {fmt_gain(largest['test'])} "
            f"{_quote(largest['text'])}"
        )
    s = summary(steps)
    return (
        f"attribution (test {a.get('metric')}): {head}; {part}; {s['steps_flagged']} of {s['steps']} "
        f"step gains distinguishable from zero (Holm over {_family(a)} test gains)"
    )


def _family(a: dict) -> int:
    gains = [x.get("test") for x in (a.get("steps") or []) + (a.get("units") or [])]
    return next((g["family"] for g in gains if g and "family" in g), sum(bool(g) for g in gains))


def explain_lines(a: dict) -> list[str]:
    """``apo-local explain``'s report: every lineage step and every unit with test and validation intervals."""
    m, rows = a.get("metric"), a.get("rows") or {}
    lines = [
        f"edit attribution ({m}; paired bootstrap 95% intervals on {rows.get('test', 0)} test and "
        f"{rows.get('validation', 0)} validation rows; * = the test gain is distinguishable from zero with the "
        f"family-wise error held at 5%, Holm over all {_family(a)} test gains below; the validation rows chose "
        "this prompt, so its validation gains were used for selection and are optimistic)",
        "",
        "lineage (initial -> selected):"
        + ("" if a.get("lineage_complete", True) else " (incomplete: a parent is missing from the round records)"),
    ]
    lines.append(f"  root {a['lineage'][0]['id']}: {_quote(a['lineage'][0]['text'], 90)}")
    for s, node in zip(a.get("steps") or [], a["lineage"][1:]):
        mark = "*" if is_flagged(s.get("test")) else " "
        lines.append(
            f" {mark}r{s['round']} {s['operator']:<10} {s['id']}: test {fmt_gain(s.get('test')):<26} "
            f"validation (used for selection) {fmt_gain(s.get('validation')):<26} {_quote(node['text'], 60)}"
        )
        if s.get("gradient"):
            lines.append(f"      from gradient {_quote(s['gradient'], 100)}")
    total = a.get("units_total", len(a.get("units") or []))
    lines += [
        "",
        f"units of the selected prompt (selected minus selected-without-it; {len(a.get('units') or [])} of "
        f"{total} ablated):",
    ]
    for u in a.get("units") or []:
        mark = "*" if is_flagged(u.get("test")) else " "
        lines.append(
            f" {mark}{u['index']:>2} {u['kind']:<13} test {fmt_gain(u.get('test')):<26} validation (used "
            f"for selection) {fmt_gain(u.get('validation')):<26} {_quote(u['text'], 60)}"
        )
    return lines + ["", attribution_line(a)]
