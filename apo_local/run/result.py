"""What a run returns and writes as ``results.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TypedDict


class BeamRow(TypedDict):
    """One final beam prompt: its selection estimate, validation scores (None without validation rows) and test
    score by the task's metric."""

    id: str
    text: str
    estimate: float | None
    validation: dict | None
    test: float


class ReplySummary(TypedDict):
    """The optimizer's replies and the candidates made from them (``reply_summary``)."""

    guided: bool
    replies: int
    guided_replies: int
    truncated: int
    cut_repetition: int
    used_whole: int
    proposals: int
    accepted: int
    accepted_share: float | None
    rejected: dict[str, int]  # rule -> proposals it rejected


@dataclass
class RunResult:
    metric: str
    initial_prompt: str
    best_prompt: str  # best beam prompt on the test split ("max-pooled", as ProTeGi reports): optimistic
    selected_prompt: str  # the prompt the search selected without the test split (the one to deploy): the best
    # final beam prompt on the validation rows, or without validation rows the selection's first (top estimate)
    initial_test: dict  # *_test: metrics, distributions, confusion and "ci" (95% bootstrap intervals over rows)
    best_test: dict
    selected_test: dict
    beam: list[BeamRow]
    rounds_completed: int
    stop_reason: str  # "completed" or "budget: <cap> (<value>) reached"
    usage: dict  # by role: calls, prompts, input_tokens, output_tokens (identical on resume)
    faults: dict  # counted fallbacks: parse failures, rejected candidates, ...
    history: list[dict] = field(default_factory=list)  # per round: beam estimates (and test, if asked)
    # optimizer replies and candidates: parsed, truncated, rejected (a results.json of an earlier version: a dict)
    replies: ReplySummary | dict = field(default_factory=dict)
    time: dict = field(default_factory=dict)  # wall seconds, by role, cache hits (vary across runs)
    selected_by: str = "selection estimate"  # how selected_prompt was chosen
    selected_vs_initial: dict = field(default_factory=dict)  # paired test statistics (run/headline.py)
    pick: dict | None = None  # selection.pick other than "estimate": the rule and the beam it chose from
    initial_validation: dict | None = None  # the initial prompt's validation scores (final_pick: guarded)
    constant_baselines: dict | None = None  # classification: {best, majority_label, by_label: label -> test summary}
    selected_vs_constant: dict | None = None  # paired test statistics against the best constant answer
    headline: str = ""  # one plain-word sentence: what the test numbers mean (run/headline.py: headline)
    attribution: dict | None = None  # edit attribution: lineage gains, unit contributions (run/attribution.py)
    models: dict | None = None  # by role: the model used (name, alias, folder, weights fingerprint; engine.model_of)
    warnings: list[str] = field(default_factory=list)  # what the reader must know before trusting the numbers

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in (
            "pick",
            "initial_validation",
            "constant_baselines",
            "selected_vs_constant",
            "attribution",
            "models",
        ):
            if d[key] is None:
                del d[key]
        if not d["warnings"]:
            del d["warnings"]
        return d


def wall_seconds(results: dict) -> float | None:
    """A finished run's whole wall time from its results.json (model load, search, final test: ``time.total``);
    runs from before the total was kept: their search time."""
    t = results.get("time") or {}
    return t.get("total", t.get("seconds"))


def reply_summary(counts: dict, rejections: dict, guided: bool) -> ReplySummary:
    """The optimizer's replies and the candidates made from them, from the trace's counts: replies (guided,
    truncated and rejected, cut at a loop and kept, used whole without tags), proposals, candidates accepted
    and their share, and the proposals rejected by each rule (``search/hygiene.py``, ``parsing.is_degenerate``)."""
    proposals, accepted = counts.get("proposals", 0), counts.get("proposals_accepted", 0)
    rejected = dict(sorted(rejections.items()))
    return ReplySummary(
        guided=guided,
        replies=counts.get("replies", 0),
        guided_replies=counts.get("replies_guided", 0),
        truncated=counts.get("replies_truncated", 0),
        cut_repetition=counts.get("replies_cut_repetition", 0),
        used_whole=counts.get("replies_used_whole", 0),
        proposals=proposals,
        accepted=accepted,
        accepted_share=round(accepted / proposals, 3) if proposals else None,
        rejected=rejected,
    )


def replies_line(r: dict) -> str:
    """One line for the CLI table and the report: the optimizer's replies and what became of them."""
    share = "-" if r.get("accepted_share") is None else f"{r['accepted_share']:.0%}"
    rejected = ", ".join(f"{k} {v}" for k, v in r.get("rejected", {}).items()) or "none"
    return (
        f"optimizer replies={r['replies']} ({'guided' if r['guided'] else 'free text'}) "
        f"truncated={r['truncated']} cut={r.get('cut_repetition', 0)} used_whole={r['used_whole']} | "
        f"candidates proposed={r['proposals']} "
        f"accepted={r['accepted']} ({share}) rejected: {rejected}"
    )
