"""A run directory's checkpoint: ``checkpoint.json`` (the ``RunState``, ``version: 2``) and the scorer's predictions
beside it.

The scorer's predictions (up to one per scored (instruction, row) pair: 10^6 in a large run) are not
rewritten at every checkpoint: they go to ``checkpoint-predictions.jsonl`` beside it, append-only (one
line per instruction and save, holding only the pairs new since the last save), and the checkpoint
records how many bytes of that file belong to it. A save appends, then replaces the checkpoint; a kill
between the two leaves bytes past the recorded length, which a load ignores and the next save cuts
off. A checkpoint with its predictions inline (written before) still loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from apo_local.search.state import RunState
from apo_local.support.errors import ApoError
from apo_local.support.files import write_json


def predictions_log(checkpoint: Path) -> Path:
    return Path(checkpoint).with_name("checkpoint-predictions.jsonl")


class Checkpoint:
    """One checkpoint file; it remembers how much of the predictions log its saves and loads account for."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.logged: dict[str, int] = {}  # instruction -> predictions already in the log
        self.log_bytes = 0  # bytes of the log that belong to the checkpoint

    def save(self, state: RunState) -> None:
        """The new predictions appended to the log, then the checkpoint (atomic replace) pointing at it."""
        log_path = predictions_log(self.path)
        fd = os.open(log_path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+b") as f:
            f.truncate(self.log_bytes)  # bytes of a save that never reached its checkpoint
            f.seek(self.log_bytes)
            for ins, rows in state.predictions.items():
                done = self.logged.get(ins, 0)
                if len(rows) > done:
                    new = dict(list(rows.items())[done:])
                    f.write((json.dumps([ins, new], ensure_ascii=False) + "\n").encode("utf-8"))
                    self.logged[ins] = len(rows)
            f.flush()
            os.fsync(f.fileno())
            self.log_bytes = f.tell()
        d = state.to_dict()
        del d["predictions"]
        d["predictions_log"] = {"file": log_path.name, "bytes": self.log_bytes}
        write_json(self.path, d)

    def load(self) -> RunState | None:
        if not self.path.is_file():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApoError(f"{self.path}: not a valid checkpoint ({exc})") from None
        state = RunState.from_dict(data)
        if "predictions_log" in data:
            self._read_log(state, predictions_log(self.path), int(data["predictions_log"]["bytes"]))
        return state

    def _read_log(self, state: RunState, log_path: Path, size: int) -> None:
        try:
            with open(log_path, "rb") as f:
                blob = f.read(size)
        except OSError as exc:
            raise ApoError(f"{log_path}: the checkpoint's predictions are missing ({exc.strerror})") from None
        if len(blob) < size:
            raise ApoError(f"{log_path}: the checkpoint's predictions are cut short ({len(blob)} of {size} bytes)")
        try:
            for line in blob.decode("utf-8").splitlines():
                ins, rows = json.loads(line)
                state.predictions.setdefault(ins, {}).update(rows)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApoError(f"{log_path}: not a valid predictions log ({exc})") from None
        self.logged = {ins: len(rows) for ins, rows in state.predictions.items()}
        self.log_bytes = size
