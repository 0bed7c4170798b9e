"""Roles: the target model (being prompted) and the optimizer model (writing gradients and edits).

A ``RoleEngine`` is an engine seen through one role. It records every call in the run's ledger (``ledger.Trace``:
role, phase, round, prompts, tokens, cache hits, seconds), and before every call it asks the run's budget
(``ledger.Budget``) whether a cap has been reached: the one budget gate of a run, so nothing the search calls has
to check the budget itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager

from apo_local.engine.protocol import ChoiceScores, Generation, GenerationRequest
from apo_local.ledger import ROLES, Budget, Trace


class RoleEngine:
    def __init__(self, engine, role: str, trace: Trace, budget: Budget | None = None):
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.engine, self.role, self.trace, self.budget = engine, role, trace, budget
        self.model_id = engine.model_id
        self.max_model_len = engine.max_model_len

    def _gate(self) -> None:
        """Before every engine call: ``BudgetStop`` once a cap is reached (while the budget is enforced)."""
        if self.budget is not None:
            self.budget.check()

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return self.engine.count_tokens(prompts)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        self._gate()
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
        self._gate()
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
