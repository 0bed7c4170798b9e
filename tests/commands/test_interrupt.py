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


def _main(monkeypatch, capsys, *args) -> tuple[int, str]:
    import sys

    from apo_local.commands.cli import main

    monkeypatch.setattr(sys, "argv", ["apo-local", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


def test_ctrl_c_hint_names_the_actual_run_directory(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    import importlib

    module = importlib.import_module("apo_local.run.optimize")  # the module behind apo.optimize
    monkeypatch.setattr(module, "optimize", interrupted)
    monkeypatch.setattr(module, "resume", interrupted)
    run = tmp_path / "my-run"
    code, err = _main(monkeypatch, capsys, "optimize", "--out", run, "--rounds", "1")
    assert code == 130 and err.strip() == f"interrupted; continue with: apo-local optimize --resume {run}"
    code, err = _main(monkeypatch, capsys, "optimize", "--resume", run)
    assert code == 130 and err.strip() == f"interrupted; continue with: apo-local optimize --resume {run}"


def test_ctrl_c_on_evaluate_has_no_resume_hint(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("apo_local.engine.load_engine", interrupted)
    code, err = _main(monkeypatch, capsys, "evaluate", "--limit", "2")
    assert code == 130 and err.strip() == "interrupted"


class _SlowEngine:
    hits, model_id, max_model_len = 0, "stand-in", 2048

    def score_choices(self, prompts, choices):
        import time

        time.sleep(0.3)
        return []


def test_long_engine_call_gets_a_progress_line(tmp_path, monkeypatch, caplog):
    import logging

    monkeypatch.setattr(roles, "PROGRESS_AFTER_S", 0.05)
    trace = roles.Trace()
    trace.at("minibatch", 1)
    eng = roles.RoleEngine(_SlowEngine(), "target", trace)
    with caplog.at_level(logging.INFO, logger="apo_local"):
        eng.score_choices(["a", "b", "c"], ["Yes", "No"])
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "target: 3 scoring requests (minibatch, round 1) ..."
    assert lines[1].startswith("target: 3 scoring requests (minibatch, round 1) done in 0.")
