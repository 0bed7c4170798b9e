"""The run directory: everything a run leaves behind, written so that a kill at any moment is safe.

    config.yaml         resolved configuration
    estimate.json       the pre-run size: engine calls, prompts, tokens per role (upper bounds)
    trace.jsonl         one line per engine call (role, phase, round, tokens, cache hits, seconds)
                        and one per counted fault (unparseable reply, rejected candidate, ...)
    rounds/round-NN.json  every candidate of round NN: text, parent, operator, gradient, estimate, pulls
    checkpoint.json     search state (``RunState``, version 2) at the last phase boundary (atomic replace)
    checkpoint-predictions.jsonl  the scorer's predictions, append-only; checkpoint.json says how much is its own
    results.json        final report
    predictions/test-{initial,best,selected}.jsonl  the final test evaluation, one line per example

Created user-readable only (0700/0600): it holds private data. A lock file keeps a second process out.
A compare directory holds one run directory per method and seed (``METHOD/seed-N``) beside its compare.yaml.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from apo_local.support.errors import ApoError
from apo_local.support.files import atomic_write, write_json  # noqa: F401  (the run's writers)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = None
        self.fresh = False  # True once open() started a new run here (not a resume)

    config = property(lambda self: self.path / "config.yaml")
    trace = property(lambda self: self.path / "trace.jsonl")
    checkpoint = property(lambda self: self.path / "checkpoint.json")
    results = property(lambda self: self.path / "results.json")
    rounds = property(lambda self: self.path / "rounds")

    def round_file(self, r: int) -> Path:
        return self.rounds / f"round-{r:02d}.json"

    def open(self, config_text: str, *, resume: bool = False, overwrite: bool = False) -> None:
        """Create, resume or overwrite; refuse to mix two different runs in one folder."""
        if resume:
            if not self.config.is_file():
                raise ApoError(f"{self.path} holds no run to resume (no config.yaml)")
        elif self.path.exists() and any(child.name != ".lock" for child in self.path.iterdir()):
            if not overwrite:
                raise ApoError(
                    f"{self.path} already holds a run; use --resume to continue it or --overwrite to replace it"
                )
            self._acquire_lock()  # never wipe a folder another process is writing
            for child in self.path.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        self.rounds.mkdir(exist_ok=True, mode=0o700)
        self._acquire_lock()
        if not resume:
            atomic_write(self.config, config_text)
        self.fresh = not resume

    def _acquire_lock(self) -> None:
        if self._lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ApoError(f"{self.path} is in use by another apo-local process") from None
        self._lock = fd

    def discard(self) -> None:
        """Remove what a run that failed before its first checkpoint wrote (config, trace, rounds),
        so the same ``--out`` can be used again once the setting is fixed. Only for a run started
        here (not a resumed one); a run with a checkpoint is never touched."""
        if not self.fresh or self.checkpoint.exists():
            return
        for child in (self.config, self.trace, self.results, self.path / "estimate.json"):
            child.unlink(missing_ok=True)
        shutil.rmtree(self.rounds, ignore_errors=True)

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def load_checkpoint(self) -> dict | None:
        if not self.checkpoint.is_file():
            return None
        return json.loads(self.checkpoint.read_text(encoding="utf-8"))


COMPARE_SPEC = "compare.yaml"  # what marks a compare directory (apo_local/experiments/compare.py writes it first)


def is_compare_dir(path: str | Path) -> bool:
    return (Path(path) / COMPARE_SPEC).is_file()


def compare_runs(path: str | Path) -> list[Path]:
    """The run directories of a compare directory written so far (``METHOD/seed-N``)."""
    return sorted(d for d in Path(path).glob("*/seed-*") if (d / "config.yaml").is_file())
