"""The run's ledger: every engine call by role (``Trace``: ``trace.jsonl``, per-role totals, counted faults and
tallies) and the budget caps a run is held to over it (``Budget``, the ``budget`` config section).

``Budget.check()`` raises ``BudgetStop`` when a cap is reached; every role engine asks it before each call
(``engine/roles.py``), and the loop asks it at each phase boundary. The loop catches ``BudgetStop``, keeps the beam
of the last completed selection and reports the reason as ``stop_reason`` ("budget: max_minutes (8) reached").
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apo_local.config.schema import BudgetConfig

ROLES = ("target", "optimizer")


@dataclass
class RoleTotals:
    calls: int = 0  # engine calls (batches)
    prompts: int = 0  # requests inside them
    input_tokens: int = 0
    output_tokens: int = 0
    cache_hits: int = 0
    seconds: float = 0.0


def _append(path: Path, line: str) -> None:
    """One whole line, appended; the file is created user-only (the trace holds prompts and outputs)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


class Trace:
    """Appends one JSON line per engine call to ``trace.jsonl`` (or keeps totals only)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else None
        self.phase = ""
        self.round: int | None = None
        self.totals = {role: RoleTotals() for role in ROLES}
        self.faults: dict[str, int] = {}
        self.counts: dict[str, int] = {}  # tallies that are not faults (optimizer replies, candidates)
        self.rejections: dict[str, int] = {}  # proposals rejected, by the rule that rejected them
        self.phase_seconds: dict[str, float] = {}  # engine seconds by phase, this process only

    def at(self, phase: str, round: int | None) -> None:
        self.phase, self.round = phase, round

    def record(
        self,
        role: str,
        op: str,
        prompts: int,
        input_tokens: int,
        output_tokens: int,
        cache_hits: int,
        seconds: float,
        **extra,
    ) -> None:
        t = self.totals[role]
        t.calls += 1
        t.prompts += prompts
        t.input_tokens += input_tokens
        t.output_tokens += output_tokens
        t.cache_hits += cache_hits
        t.seconds += seconds
        self.phase_seconds[self.phase] = self.phase_seconds.get(self.phase, 0.0) + seconds
        if self.path:
            line = dict(
                role=role,
                op=op,
                phase=self.phase,
                round=self.round,
                prompts=prompts,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_hits=cache_hits,
                seconds=round(seconds, 3),
                **extra,
            )
            _append(self.path, json.dumps(line) + "\n")

    def event(self, kind: str, **detail) -> None:
        """A counted fault or fallback (unparseable reply, rejected candidate, ...), logged in the trace."""
        self.faults[kind] = self.faults.get(kind, 0) + 1
        if self.path:
            _append(self.path, json.dumps(dict(event=kind, phase=self.phase, round=self.round, **detail)) + "\n")

    def count(self, kind: str, n: int = 1) -> None:
        """A tally (not a fault): kept with the faults in the checkpoint, reported in results.json."""
        self.counts[kind] = self.counts.get(kind, 0) + n

    def totals_dict(self) -> dict:
        return {role: asdict(t) for role, t in self.totals.items()}

    def reject(self, rule: str) -> None:
        """A proposal rejected by ``rule`` (a tally: kept in the checkpoint, reported in results.json)."""
        self.rejections[rule] = self.rejections.get(rule, 0) + 1

    def restore(self, totals: dict, faults: dict, counts: dict | None = None, rejections: dict | None = None) -> None:
        self.totals = {role: RoleTotals(**totals.get(role, {})) for role in ROLES}
        self.faults = dict(faults)
        self.counts = dict(counts or {})
        self.rejections = dict(rejections or {})


class BudgetStop(Exception):
    """A budget cap fired; ``reason`` is the run's stop reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Budget:
    """The caps of the ``budget`` config section over the run's ledger and its search time. Enforced only while
    the rounds run (``start`` .. ``stop``): the final evaluation is never cut short."""

    def __init__(self, caps: BudgetConfig, trace: Trace, clock=time.monotonic):
        self.caps, self.trace, self.clock = caps, trace, clock
        self.started = clock()  # reset by ``start``
        self.stopped_at: float | None = None
        self.enforced = False

    def start(self, elapsed_before: float = 0.0) -> None:
        """The rounds begin: search time counts from here (plus earlier processes' seconds), caps are enforced."""
        self.started, self.stopped_at, self.enforced = self.clock() - elapsed_before, None, True

    def stop(self) -> None:
        """The rounds ended: search time stops counting and no cap fires any more."""
        self.stopped_at, self.enforced = self.clock(), False

    @property
    def elapsed(self) -> float:
        """Search seconds, those of earlier processes of this run included."""
        return (self.stopped_at if self.stopped_at is not None else self.clock()) - self.started

    @contextmanager
    def suspended(self):
        """Engine calls inside the rounds that are not search work (a per-round test score): no cap fires."""
        enforced, self.enforced = self.enforced, False
        try:
            yield
        finally:
            self.enforced = enforced

    def reached(self) -> str | None:
        b, t = self.caps, self.trace.totals
        if b.max_target_calls and t["target"].prompts >= b.max_target_calls:
            return f"budget: max_target_calls ({b.max_target_calls}) reached"
        opt_tokens = t["optimizer"].input_tokens + t["optimizer"].output_tokens
        if b.max_optimizer_tokens and opt_tokens >= b.max_optimizer_tokens:
            return f"budget: max_optimizer_tokens ({b.max_optimizer_tokens}) reached"
        if b.max_minutes and self.elapsed >= b.max_minutes * 60:
            return f"budget: max_minutes ({b.max_minutes}) reached"
        return None

    def check(self) -> None:
        if not self.enforced:
            return
        reason = self.reached()
        if reason:
            raise BudgetStop(reason)
