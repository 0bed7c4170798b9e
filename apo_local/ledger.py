"""Budget caps (``budget`` config section), checked at every phase boundary and between engine batches.

``check()`` raises ``BudgetStop`` when a cap is reached; the loop catches it, keeps the beam of the last
completed selection and reports the reason as ``stop_reason`` ("budget: max_minutes (8) reached").
"""

from __future__ import annotations

import time

from apo_local.config.schema import BudgetConfig
from apo_local.engine import Trace


class BudgetStop(Exception):
    """A budget cap fired; ``reason`` is the run's stop reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Budget:
    def __init__(self, caps: BudgetConfig, trace: Trace, elapsed_before: float = 0.0, clock=time.monotonic):
        self.caps, self.trace, self.clock = caps, trace, clock
        self.started = clock() - elapsed_before

    @property
    def elapsed(self) -> float:
        """Search seconds, those of earlier processes of this run included."""
        return self.clock() - self.started

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
        reason = self.reached()
        if reason:
            raise BudgetStop(reason)
