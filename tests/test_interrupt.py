"""Ctrl-C guard of the CLI: a SIGINT swallowed inside engine code still stops the run at the next call."""

from __future__ import annotations

import os
import signal

import pytest

from apo_local.engine import roles


class _SwallowingEngine:
    """Unit-test stand-in: an engine call during which Ctrl-C arrives and is swallowed."""

    hits, model_id, max_model_len = 0, "stand-in", 2048

    def score_choices(self, prompts, choices):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # swallowed, as engine internals may do
        return []

    def generate(self, requests):
        return []


def test_swallowed_ctrl_c_stops_at_the_next_engine_call(tmp_path):
    previous = signal.getsignal(signal.SIGINT)
    try:
        roles.install_interrupt_guard()
        eng = roles.RoleEngine(_SwallowingEngine(), "target", roles.Trace(tmp_path / "trace.jsonl"))
        with pytest.raises(KeyboardInterrupt):
            eng.score_choices(["p"], ["Yes", "No"])
    finally:
        signal.signal(signal.SIGINT, previous)
        roles._INTERRUPTED.clear()
