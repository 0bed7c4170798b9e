"""Roles: the target model (being prompted) and the optimizer model (writing gradients and edits).

A ``RoleEngine`` is an engine seen through one role. It records every call in the run's trace
(role, phase, round, prompts, tokens, cache hits, seconds) and keeps per-role totals that budget
caps read. Totals count logical work (cache hits included), so they are identical whether a run
was resumed or not.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from apo_local.engine.protocol import ChoiceScores, Generation, GenerationRequest

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

    def restore(self, totals: dict, faults: dict, counts: dict | None = None) -> None:
        self.totals = {role: RoleTotals(**totals.get(role, {})) for role in ROLES}
        self.faults = dict(faults)
        self.counts = dict(counts or {})


class RoleEngine:
    def __init__(self, engine, role: str, trace: Trace):
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.engine, self.role, self.trace = engine, role, trace
        self.model_id = engine.model_id
        self.max_model_len = engine.max_model_len

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return self.engine.count_tokens(prompts)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        hits, start = self.engine.hits, time.perf_counter()
        with _progress(self.role, "generation", len(requests), self.trace):
            out = self.engine.generate(requests)
        _stop_if_interrupted()
        self.trace.record(
            self.role,
            "generate",
            len(requests),
            sum(g.input_tokens for g in out),
            sum(g.output_tokens for g in out),
            self.engine.hits - hits,
            time.perf_counter() - start,
            errors=sum(g.error is not None for g in out),
        )
        return out

    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        if not prompts:
            return []
        hits, start = self.engine.hits, time.perf_counter()
        with _progress(self.role, "scoring", len(prompts), self.trace):
            out = self.engine.score_choices(prompts, choices)
        _stop_if_interrupted()
        self.trace.record(
            self.role,
            "score_choices",
            len(prompts),
            sum(s.input_tokens for s in out),
            0,
            self.engine.hits - hits,
            time.perf_counter() - start,
            errors=sum(s.error is not None for s in out),
        )
        return out


# -- progress ------------------------------------------------------------------------------------

log = logging.getLogger("apo_local")
# an engine call running longer than this gets a line when it starts and when it ends (APO_LOCAL_PROGRESS_AFTER_S),
# and while it runs one line every HEARTBEAT_S seconds (APO_LOCAL_HEARTBEAT_S): elapsed, requests done, tokens out
PROGRESS_AFTER_S = float(os.environ.get("APO_LOCAL_PROGRESS_AFTER_S") or 2.0)
HEARTBEAT_S = float(os.environ.get("APO_LOCAL_HEARTBEAT_S") or 30.0)


@contextmanager
def _progress(role: str, what: str, n: int, trace: Trace):
    """One log line (stderr) when an engine call is still running after ``PROGRESS_AFTER_S`` seconds, a heartbeat
    every ``HEARTBEAT_S`` seconds while it runs (elapsed time, and the requests finished and tokens generated so
    far where the backend reports them: ``engine/progress.py``), and one line when it ends: long work never
    looks like a hang."""
    from apo_local.engine.progress import tracking

    where = f"{trace.phase}, round {trace.round}" if trace.phase and trace.round else (trace.phase or "")
    label = f"{role}: {n} {what} request{'s' if n != 1 else ''}" + (f" ({where})" if where else "")
    finished = threading.Event()
    start = time.perf_counter()
    with tracking() as progress:

        def beat() -> None:
            if finished.wait(PROGRESS_AFTER_S):
                return
            log.info("%s ...", label)
            while not finished.wait(HEARTBEAT_S):
                so_far = progress.describe()
                log.info(
                    "%s: still running, %.0f s%s", label, time.perf_counter() - start, f" ({so_far})" if so_far else ""
                )

        threading.Thread(target=beat, daemon=True, name="apo-heartbeat").start()
        try:
            yield
        finally:
            finished.set()
            if time.perf_counter() - start > PROGRESS_AFTER_S:
                log.info("%s done in %.1f s", label, time.perf_counter() - start)


# -- Ctrl-C ------------------------------------------------------------------------------------

_INTERRUPTED = threading.Event()


def install_interrupt_guard() -> None:
    """Make Ctrl-C stop a run even when it lands inside engine code that swallows KeyboardInterrupt
    (an in-process vLLM engine step can): the first SIGINT raises KeyboardInterrupt as usual and is
    remembered, and every engine call that returns afterwards raises it again. The CLI installs it;
    a library caller keeps its own SIGINT handling."""
    import signal

    def on_sigint(signum, frame):
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def _stop_if_interrupted() -> None:
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt
