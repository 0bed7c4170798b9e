"""The checkpoint's predictions: appended to a log beside checkpoint.json, never rewritten whole."""

from __future__ import annotations

import json

import pytest

from apo_local.run.checkpoint import Checkpoint, predictions_log
from apo_local.search.state import RunState
from apo_local.support.errors import ApoError


def _memo(n_ins: int, n_rows: int, start: int = 0) -> dict:
    return {
        f"ins {i}": {f"r{r}": ["Yes" if r % 2 else "No", "", None] for r in range(start, n_rows)} for i in range(n_ins)
    }


def _grow(state: RunState, memo: dict) -> None:
    """What the search loop does at a checkpoint: the scorer's whole memo, as a new dict."""
    merged = {ins: dict(rows) for ins, rows in state.predictions.items()}
    for ins, rows in memo.items():
        merged.setdefault(ins, {}).update(rows)
    state.predictions = merged


def test_each_save_appends_only_the_new_predictions(tmp_path):
    ckpt = tmp_path / "checkpoint.json"
    state, cp = RunState.fresh("Is it a lie?"), Checkpoint(ckpt)
    _grow(state, _memo(3, 200))
    cp.save(state)
    first = predictions_log(ckpt).read_bytes()
    assert "predictions" not in json.loads(ckpt.read_text())  # the checkpoint itself stays small
    _grow(state, _memo(4, 210))  # 10 new rows for 3 instructions, 210 for a new one
    cp.save(state)
    second = predictions_log(ckpt).read_bytes()
    assert second.startswith(first)  # appended, the earlier bytes untouched
    new_lines = second[len(first) :].decode().splitlines()
    assert len(new_lines) == 4 and sum(len(json.loads(line)[1]) for line in new_lines) == 3 * 10 + 210
    cp.save(state)  # nothing new: nothing written
    assert predictions_log(ckpt).read_bytes() == second
    loaded = Checkpoint(ckpt).load()
    assert loaded == state and loaded.predictions == state.predictions
    assert list(loaded.predictions["ins 0"]) == list(state.predictions["ins 0"])  # order kept: resumes replay it


def test_a_kill_between_log_and_checkpoint_is_ignored_then_cut(tmp_path):
    ckpt = tmp_path / "checkpoint.json"
    state = RunState.fresh("x")
    _grow(state, _memo(2, 5))
    Checkpoint(ckpt).save(state)
    with open(predictions_log(ckpt), "ab") as f:  # a later save appended, then the process died
        f.write(b'["ins 9", {"r0": ["Yes", "", null]}]\n["half a li')
    cp = Checkpoint(ckpt)  # the resumed process's
    resumed = cp.load()
    assert resumed.predictions == state.predictions  # what the checkpoint saw, nothing more
    _grow(resumed, _memo(2, 6))
    cp.save(resumed)
    again = Checkpoint(ckpt).load()
    assert "ins 9" not in again.predictions and again.predictions == resumed.predictions
    assert b"half a li" not in predictions_log(ckpt).read_bytes()


def test_inline_predictions_of_an_earlier_checkpoint_still_load_and_move_to_the_log(tmp_path):
    ckpt = tmp_path / "checkpoint.json"
    state = RunState.fresh("x")
    state.predictions = _memo(2, 3)
    ckpt.write_text(json.dumps(state.to_dict()))  # the earlier layout: predictions inside the checkpoint
    cp = Checkpoint(ckpt)
    loaded = cp.load()
    assert loaded.predictions == state.predictions
    cp.save(loaded)
    assert Checkpoint(ckpt).load().predictions == state.predictions
    assert len(predictions_log(ckpt).read_text().splitlines()) == 2


def test_a_missing_or_short_log_is_one_clear_error(tmp_path):
    ckpt = tmp_path / "checkpoint.json"
    state = RunState.fresh("x")
    state.predictions = _memo(1, 3)
    Checkpoint(ckpt).save(state)
    log = predictions_log(ckpt)
    log.write_bytes(log.read_bytes()[:5])
    with pytest.raises(ApoError, match="cut short"):
        Checkpoint(ckpt).load()
    log.unlink()
    with pytest.raises(ApoError, match="missing"):
        Checkpoint(ckpt).load()
