"""What a report shows, read from a run directory (no engine, no model): results, rounds, trace.

Everything here is plain data (dicts and lists) so plots and HTML stay dumb.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from apo_local.support.errors import ApoError

log = logging.getLogger("apo_local")

# A class counts as suppressed when its predicted share is below this fraction of its true share
# (and its true share is at least MIN_SHARE): the "prevalence hacking" failure of textual-gradient
# optimizers, which raise a metric such as F1 by predicting mostly one class.
SUPPRESSION_RATIO = 0.5
MIN_SHARE = 0.05


@dataclass
class RunData:
    path: Path
    config: dict
    results: dict | None  # None while a run is unfinished
    rounds: list[dict]  # rounds/round-NN.json, in order
    calls: list[dict]  # trace lines with a "role"
    events: list[dict]  # trace lines with an "event" (counted faults)
    true_distribution: dict[str, int] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.results["metric"] if self.results else "metric"

    @property
    def finished(self) -> bool:
        return self.results is not None


def run_models(run: RunData) -> dict:
    """The models the run used, by role (results.json's ``models``, else engines.json's: an unfinished run); {}
    for a run written before they were recorded."""
    if run.results and run.results.get("models"):
        return run.results["models"]
    try:
        return json.loads((run.path / "engines.json").read_text(encoding="utf-8")).get("models") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def model_name(m: dict | None) -> str | None:
    """How a report names a recorded model: its alias (else its folder's name, or a server's model name), and
    the weights fingerprint."""
    if not m:
        return None
    if m.get("backend") == "openai":
        return f"{m.get('name') or 'served model'} at {m.get('base_url')}"
    name = m.get("alias") or Path(m.get("folder") or "?").name
    return f"{name} ({m['fingerprint']})" if m.get("fingerprint") else name


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (
        (path / "results.json").is_file() or (path / "checkpoint.json").is_file() or (path / "rounds").is_dir()
    )


def load_run(path: str | Path) -> RunData:
    p = Path(path)
    if not is_run_dir(p):
        raise ApoError(f"{p} is neither a run directory (config.yaml + results/checkpoint) nor a sweep directory")
    config = yaml.safe_load((p / "config.yaml").read_text(encoding="utf-8")) or {}
    results = json.loads((p / "results.json").read_text(encoding="utf-8")) if (p / "results.json").is_file() else None
    rounds = [json.loads(f.read_text(encoding="utf-8")) for f in sorted((p / "rounds").glob("round-*.json"))]
    calls, events = [], []
    if (p / "trace.jsonl").is_file():
        for n, line in enumerate((p / "trace.jsonl").read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d: not JSON (a run killed mid-write?); skipped", p / "trace.jsonl", n)
                continue
            (calls if "role" in rec else events if "event" in rec else []).append(rec)
    data = RunData(p, config, results, rounds, calls, events)
    data.true_distribution = _true_distribution(data)
    return data


def _true_distribution(data: RunData) -> dict[str, int]:
    """From the evaluation when recorded; else from the task's test split (same rows, no engine)."""
    if not data.results:
        return {}
    best = chosen(data.results)[1]
    if best.get("true_distribution"):
        return dict(best["true_distribution"])
    if best.get("confusion"):
        return {t: sum(row.values()) for t, row in best["confusion"].items()}
    if not best.get("predicted_distribution"):
        return {}
    try:  # older runs: recount the labels of the evaluated test rows
        from collections import Counter

        from apo_local.tasks import load_task

        ev = data.config.get("evaluation", {}) or {}
        task = load_task(data.config.get("task", "liar"))
        if task.kind != "classification":
            return {}
        rows = task.split(ev.get("test_split") or "test")[: ev.get("test_limit")]
        return dict(Counter(ex.label for ex in rows))
    except Exception as exc:  # the task moved or changed: show what the results hold
        log.warning("true label distribution unavailable (%s)", exc)
        return {}


# -- derived views ------------------------------------------------------------------------------


def chosen(res: dict) -> tuple[str, dict]:
    """The prompt the search returned and its test evaluation: the selected prompt (picked without the test
    split); runs from before it was recorded: the best of beam."""
    if res.get("selected_prompt") is not None and res.get("selected_test"):
        return res["selected_prompt"], res["selected_test"]
    return res["best_prompt"], res["best_test"]


def score_per_round(data: RunData) -> dict:
    """Per round: every evaluated candidate's bandit estimate, the beam's, the best beam estimate,
    per-round test scores (when asked for), plus the initial and the selected prompt's test scores."""
    points, beam, best_est, test = [], [], [], []
    for rnd in data.rounds:
        r = rnd["round"]
        for c in rnd["candidates"]:
            if c.get("estimate") is None:
                continue
            (beam if c.get("status") == "beam" else points).append((r, c["estimate"]))
        ests = [c["estimate"] for c in rnd["candidates"] if c.get("status") == "beam" and c.get("estimate") is not None]
        if ests:
            best_est.append((r, max(ests)))
    res = data.results or {}
    for h in res.get("history", []):
        if h.get("test"):
            test.append((h["round"], max(h["test"])))
    initial_est = next(
        (
            c["estimate"]
            for rnd in data.rounds[:1]
            for c in rnd["candidates"]
            if c.get("operator") == "initial" and c.get("estimate") is not None
        ),
        None,
    )
    m = res.get("metric")
    return {
        "candidates": points,
        "beam": beam,
        "best_estimate": best_est,
        "test": test,
        "initial_test": res["initial_test"]["metrics"][m] if res else None,
        "selected_test": chosen(res)[1]["metrics"][m] if res else None,
        "initial_estimate": initial_est,
        "rounds": len(data.rounds),
        "metric": m,
    }


def lineage(data: RunData) -> list[dict]:
    """Every candidate once: id, round made, parent, operator, gradient, text, last estimate, fate.

    ``fate``: "selected" (the prompt the search returned), "beam" (in the last beam), "kept" (carried over at least
    one round), "not selected", "dropped: ...". ``kept_rounds``: rounds it survived as a parent."""
    nodes: dict[str, dict] = {}
    for rnd in data.rounds:
        r = rnd["round"]
        for c in rnd["candidates"]:
            n = nodes.setdefault(
                c["id"],
                {
                    "id": c["id"],
                    "round": c.get("round", r),
                    "parent": c.get("parent"),
                    "operator": c.get("operator"),
                    "gradient": c.get("gradient"),
                    "text": c["text"],
                    "estimate": None,
                    "pulls": 0,
                    "status": None,
                    "kept_rounds": [],
                },
            )
            if c.get("round", r) < r:
                n["kept_rounds"].append(r)
            if c.get("estimate") is not None:
                n["estimate"], n["pulls"] = c["estimate"], c.get("pulls") or 0
            n["status"] = c.get("status")
    res = data.results or {}
    last_beam = {b["id"] for b in res.get("beam", [])}
    for n in nodes.values():
        if res and n["text"] == chosen(res)[0]:
            n["fate"] = "selected"
        elif n["id"] in last_beam or (not res and n["status"] == "beam"):
            n["fate"] = "beam"
        elif n["kept_rounds"]:
            n["fate"] = "kept"
        else:
            n["fate"] = n["status"] or "new"
    return sorted(nodes.values(), key=lambda n: (n["round"], n["id"]))


def usage_by_role_phase(data: RunData) -> list[dict]:
    """Trace aggregated by (role, phase): calls, prompts, tokens, cache hits, seconds."""
    agg: dict[tuple, dict] = {}
    for c in data.calls:
        key = (c["role"], c.get("phase") or "-")
        a = agg.setdefault(
            key,
            {
                "role": key[0],
                "phase": key[1],
                "calls": 0,
                "prompts": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_hits": 0,
                "seconds": 0.0,
            },
        )
        a["calls"] += 1
        for k in ("prompts", "input_tokens", "output_tokens", "cache_hits"):
            a[k] += int(c.get(k) or 0)
        a["seconds"] += float(c.get("seconds") or 0.0)
    order = {"minibatch": 0, "gradient": 1, "edit": 2, "paraphrase": 3, "select": 4, "test": 5, "final": 6}
    return sorted(agg.values(), key=lambda a: (a["role"] != "target", order.get(a["phase"], 3.5), a["phase"]))


def faults(data: RunData) -> list[dict]:
    agg: dict[tuple, int] = {}
    for e in data.events:
        key = (e["event"], e.get("phase") or "-")
        agg[key] = agg.get(key, 0) + 1
    return [{"event": k[0], "phase": k[1], "count": v} for k, v in sorted(agg.items())]


def reply_outcomes(data: RunData) -> list[dict]:
    """Truncated replies, replies whose loop was cut off, parse failures and rejected candidates from the trace:
    per (event, step or rule, reason) a count and the first example's opening."""
    agg: dict[tuple, dict] = {}
    for e in data.events:
        if e["event"] not in ("reply_truncated", "reply_cut_repetition", "parse_failure", "candidate_rejected"):
            continue
        where = e.get("rule") or e.get("purpose") or e.get("phase") or "-"
        key = (e["event"], where, str(e.get("reason") if e["event"] != "candidate_rejected" else where))
        row = agg.setdefault(
            key,
            {
                "event": key[0],
                "where": where,
                "reason": key[2],
                "count": 0,
                "example": " ".join(str(e.get("text") or e.get("reply") or "").split())[:120],
            },
        )
        row["count"] += 1
    return sorted(agg.values(), key=lambda r: (r["event"], -r["count"]))


def prompt_lengths(data: RunData) -> list[dict]:
    """Per round: words and characters of the beam prompts (status == "beam")."""
    out = []
    for rnd in data.rounds:
        beam = [c["text"] for c in rnd["candidates"] if c.get("status") == "beam"]
        if not beam:
            continue
        words = [len(t.split()) for t in beam]
        out.append(
            {
                "round": rnd["round"],
                "beam": len(beam),
                "words_mean": sum(words) / len(words),
                "words_min": min(words),
                "words_max": max(words),
                "chars_mean": sum(len(t) for t in beam) / len(beam),
            }
        )
    return out


def classification(data: RunData) -> dict | None:
    """Predicted vs true label distribution (initial and selected prompt), their confusion matrices, and
    suppression warnings."""
    res = data.results
    if not res:
        return None
    prompt, selected = chosen(res)
    if not selected.get("predicted_distribution") or not data.true_distribution:
        return None
    true = data.true_distribution
    n_true = sum(true.values()) or 1
    labels = list(
        dict.fromkeys(
            [
                *sorted(true),
                *sorted(selected["predicted_distribution"]),
                *sorted(res["initial_test"].get("predicted_distribution", {})),
            ]
        )
    )
    out = {
        "labels": labels,
        "true": true,
        "initial": res["initial_test"].get("predicted_distribution", {}),
        "selected": selected["predicted_distribution"],
        "confusion": selected.get("confusion") or {},
        "initial_confusion": res["initial_test"].get("confusion") or {},
        "warnings": [],
    }
    same = prompt == res.get("initial_prompt")  # the search kept the initial prompt: one warning, not two
    for which in ("selected",) if same else ("selected", "initial"):
        pred = out[which]
        n_pred = sum(pred.values()) or 1
        for lab, cnt in true.items():
            share_t, share_p = cnt / n_true, pred.get(lab, 0) / n_pred
            if share_t >= MIN_SHARE and share_p < SUPPRESSION_RATIO * share_t:
                out["warnings"].append(
                    {
                        "prompt": "selected (= initial)" if same else which,
                        "label": lab,
                        "true_share": share_t,
                        "predicted_share": share_p,
                    }
                )
    return out


def prompt_diff(a: str, b: str) -> list[tuple[str, str]]:
    """Word-level diff of ``a`` -> ``b``: [(op, text)] with op in equal / delete / insert."""
    import difflib
    import re

    ta, tb = re.findall(r"\s+|[^\s]+", a), re.findall(r"\s+|[^\s]+", b)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("equal", "".join(ta[i1:i2])))
        else:
            if i2 > i1:
                out.append(("delete", "".join(ta[i1:i2])))
            if j2 > j1:
                out.append(("insert", "".join(tb[j1:j2])))
    return out
