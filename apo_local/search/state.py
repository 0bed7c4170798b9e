"""Typed search state: a candidate prompt, and the run state that is also the checkpoint.

``RunState`` is everything a resumed run needs: the round and phase reached, the current beam and the
round's candidates, the per-round history, the trace totals and faults, and the scorer's predictions.
Its dict form (``to_dict`` / ``from_dict``) is the checkpoint's ``version: 2`` layout; a version-1 checkpoint (the
untyped layout written before) is migrated by ``from_dict``. The files are the run's (``run/checkpoint.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar

from apo_local.support.errors import ApoError


def candidate_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class Status(str, Enum):
    """Where a candidate stands in its round. Serialized by value (with ``: reason`` for the last two)."""

    NEW = "new"  # proposed this round, competing
    KEPT = "kept"  # a parent carried into this round's selection
    BEAM = "beam"  # chosen for the next beam
    NOT_SELECTED = "not selected"  # competed, not chosen
    DROPPED = "dropped"  # admissible but over the per-parent cap
    REJECTED = "rejected"  # not admissible (degenerate, too long)


class Phase(str, Enum):
    START = "start"  # nothing done yet in this run
    EXPANDED = "expanded"  # the round's candidates are proposed
    SELECTED = "selected"  # the round's beam is chosen
    FINAL = "final"  # the search has ended (its stop reason recorded); the final evaluation is under way
    DONE = "done"  # the final evaluation, predictions and results.json are written


@dataclass
class Candidate:
    text: str  # the instruction section (the only part of the template that is optimized)
    round: int  # round that created it (0 = initial)
    operator: str  # initial | edit | paraphrase | ... (what made it)
    parent: str | None = None  # id of the candidate it was derived from
    gradient: str | None = None  # the textual gradient (reason / feedback) behind it, if any
    critique: str | None = None  # three-stage only: the critique of the outputs the feedback came from
    id: str = ""
    estimate: float | None = None  # selection estimate in the round it last competed in
    pulls: int = 0
    status: Status = Status.NEW
    reason: str | None = None  # why it was dropped or rejected

    def __post_init__(self) -> None:
        self.id = self.id or candidate_id(self.text)
        self.status = Status(self.status)

    @property
    def competing(self) -> bool:
        return self.status in (Status.NEW, Status.KEPT)

    def mark(self, status: Status, reason: str | None = None) -> None:
        self.status, self.reason = status, reason

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reason"}
        d["status"] = f"{self.status.value}: {self.reason}" if self.reason else self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        d = dict(d)
        status, _, reason = str(d.pop("status", "new")).partition(": ")
        return cls(**d, status=Status(status), reason=reason or None)


@dataclass
class RunState:
    VERSION: ClassVar[int] = 2

    initial: str  # the initial instruction
    round: int = 0  # last round started and checkpointed
    phase: Phase = Phase.START
    elapsed: float = 0.0  # search seconds before this process (max_minutes counts them)
    beam: list[Candidate] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)  # this round's: parents (kept) + proposals
    history: list[dict] = field(default_factory=list)  # one entry per selected round (results.json)
    totals: dict = field(default_factory=dict)  # trace totals by role
    faults: dict = field(default_factory=dict)  # counted fallbacks by kind
    counts: dict = field(default_factory=dict)  # tallies: optimizer replies, candidates proposed and accepted
    rejections: dict = field(default_factory=dict)  # proposals rejected, by rule
    predictions: dict = field(default_factory=dict)  # the scorer's memo (a resume asks nothing twice)
    stop_reason: str | None = None  # why the search ended (set with phase FINAL): "completed" or a budget cap

    def __post_init__(self) -> None:
        self.phase = Phase(self.phase)

    @classmethod
    def fresh(cls, initial: str) -> RunState:
        return cls(initial=initial, beam=[Candidate(initial, 0, "initial")])

    def to_dict(self) -> dict:
        return {
            "version": self.VERSION,
            "round": self.round,
            "phase": self.phase.value,
            "initial": self.initial,
            "elapsed": self.elapsed,
            "beam": [c.to_dict() for c in self.beam],
            "candidates": [c.to_dict() for c in self.candidates],
            "history": self.history,
            "totals": self.totals,
            "faults": self.faults,
            "counts": self.counts,
            "rejections": self.rejections,
            "predictions": self.predictions,
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        version = d.get("version")
        if version == 1:
            d = migrate_v1(d)
        elif version != cls.VERSION:
            raise ApoError(f"checkpoint version {version!r} is not supported (this apo-local reads 1 and 2)")
        counts, rejections = split_rejections(d.get("counts", {}), d.get("rejections", {}))
        return cls(
            initial=d["initial"],
            round=d["round"],
            phase=Phase(d["phase"]),
            elapsed=d["elapsed"],
            beam=[Candidate.from_dict(c) for c in d["beam"]],
            candidates=[Candidate.from_dict(c) for c in d["candidates"]],
            history=d["history"],
            totals=d["totals"],
            faults=d["faults"],
            counts=counts,
            rejections=rejections,
            predictions=d.get("predictions", {}),
            stop_reason=d.get("stop_reason"),
        )


def split_rejections(counts: dict, rejections: dict) -> tuple[dict, dict]:
    """A checkpoint written before rejections had their own tally kept them among the counts as "rejected:<rule>"
    keys: those move to the rejections, by rule."""
    earlier = {k: v for k, v in counts.items() if k.startswith("rejected:")}
    if not earlier:
        return counts, rejections
    moved = dict(rejections)
    for key, n in earlier.items():
        rule = key.split(":", 1)[1]
        moved[rule] = moved.get(rule, 0) + n
    return {k: v for k, v in counts.items() if k not in earlier}, moved


def migrate_v1(d: dict) -> dict:
    """Version 1 (``{version, round, phase, totals, faults, state: {...}, predictions}``) -> version 2 (flat)."""
    s = d["state"]
    return {
        "version": 2,
        "round": s["round"],
        "phase": s["phase"],
        "initial": s["initial"],
        "elapsed": s.get("elapsed", 0.0),
        "beam": s["beam"],
        "candidates": s["candidates"],
        "history": s["history"],
        "totals": d["totals"],
        "faults": d["faults"],
        "predictions": d.get("predictions", {}),
    }
