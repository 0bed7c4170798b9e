"""Resume from a kill at every boundary of the final phase, on the real engine: the rounds are over (checkpoint
FINAL), the final evaluation runs, the predictions, results.json and the DONE checkpoint are written, in that
order. A process killed between any two of them resumes to the uninterrupted run's results and predictions, and
never loops (a run whose checkpoint said DONE without results.json used to spin for ever).

The kill is an exception no handler catches (a ``BaseException``, as SIGKILL leaves nothing to catch), raised at
a named event, not after a delay. Every run reuses the reference run's result cache, so the engine answers from it
and each run takes seconds (tests/run/test_faults_e2e.py kills real subprocesses inside the rounds)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

import apo_local.run.optimize as runner
from apo_local.run.config import build_config
from apo_local.run.finish import Finish
from apo_local.run.optimize import optimize, resume
from apo_local.run.recorder import RunRecorder
from tests.conftest import TINY

pytestmark = pytest.mark.engine


class Killed(BaseException):
    """Stands for SIGKILL: nothing in apo-local catches it, so nothing after the kill point runs."""


def _kill(*_args, **_kwargs):
    raise Killed


def _checkpoint_phase(run: Path) -> str:
    return json.loads((run / "checkpoint.json").read_text())["phase"]


def _comparable(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text())
    results.pop("time")
    predictions = {p.name: p.read_text() for p in sorted((run / "predictions").glob("*.jsonl"))}
    return {"results": results, "predictions": predictions}


def _results_write_kills(real):
    def write_json(path, data):
        if Path(path).name == "results.json":
            raise Killed
        return real(path, data)

    return write_json


# (name, what to patch, phase the checkpoint must show after the kill, results.json there or not)
KILL_POINTS = {
    # the rounds are over and FINAL is checkpointed; the final evaluation has not started
    "final evaluation starts": (lambda mp: mp.setattr(Finish, "result", _kill), "final", False),
    # in the middle of the final evaluation: test rows scored, constant answers being scored
    "final evaluation midway": (
        lambda mp: mp.setattr("apo_local.run.finish.constant_evaluations", _kill),
        "final",
        False,
    ),
    # the predictions are written, results.json is not
    "before results.json": (
        lambda mp: mp.setattr("apo_local.run.optimize.write_json", _results_write_kills(runner.write_json)),
        "final",
        False,
    ),
    # results.json is written, the checkpoint still says FINAL
    "before the DONE checkpoint": (lambda mp: mp.setattr(RunRecorder, "done", _kill), "final", True),
}


@pytest.fixture(scope="module")
def reference(tiny_run):
    run, _ = tiny_run
    return run, _comparable(run)


def _fresh_run(reference_run: Path, tmp_path: Path) -> tuple[dict, Path]:
    cache = tmp_path / "cache.sqlite"
    # the backup API reads through the open reference cache's write-ahead log (a file copy would miss its newest
    # entries, and the engine would compute them again)
    with sqlite3.connect(reference_run.parent / "cache.sqlite") as src, sqlite3.connect(cache) as dst:
        src.backup(dst)
    return build_config(TINY, {"cache": str(cache)}), tmp_path / "run"


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_kill_in_the_final_phase_resumes_to_the_same_run(point, reference, tmp_path, monkeypatch):
    reference_run, want = reference
    patch, phase, results_there = KILL_POINTS[point]
    cfg, run = _fresh_run(reference_run, tmp_path)
    with monkeypatch.context() as mp:
        patch(mp)
        with pytest.raises(Killed):
            optimize(cfg, run)
    assert _checkpoint_phase(run) == phase
    assert (run / "results.json").is_file() == results_there
    resume(run)
    assert _checkpoint_phase(run) == "done"
    assert _comparable(run) == want


def test_a_done_checkpoint_without_results_finishes_instead_of_looping(reference, tmp_path):
    """The state a kill left before results.json was written last: DONE, no results.json, no predictions."""
    reference_run, want = reference
    cfg, run = _fresh_run(reference_run, tmp_path)
    optimize(cfg, run)
    (run / "results.json").unlink()
    shutil.rmtree(run / "predictions")
    assert _checkpoint_phase(run) == "done"
    resume(run)
    assert _comparable(run) == want


def test_resuming_a_finished_run_starts_no_engine_and_changes_nothing(reference, tmp_path, monkeypatch):
    reference_run, want = reference
    cfg, run = _fresh_run(reference_run, tmp_path)
    optimize(cfg, run)
    monkeypatch.setattr("apo_local.run.optimize.engines_for", _kill)  # a finished run needs no model
    assert {k: v for k, v in resume(run).to_dict().items() if k != "time"} == want["results"]
    assert _comparable(run) == want
