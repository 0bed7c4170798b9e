"""Offline experiment tracking (``tracking.logger``; off by default): a run's parameters, per-round metrics
and artifacts, logged with no network.

- ``files``: plain files, always available: ``params.json``, ``metrics.jsonl`` (one line per round and
  one for the final test) and ``artifacts.json`` (the run directory's files), in ``tracking.dir``
  (default: the run directory's ``tracking/``);
- ``mlflow``: an MLflow **file store** (``tracking.dir``, default ``./mlruns``; a ``file:`` URI, so no
  server is contacted), only where ``mlflow`` is importable: it is not a dependency of apo-local.

A resumed run logs to the same place: files are rewritten per round (the round is the key), and MLflow
metrics carry the round as their step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from apo_local.run.config import flatten_keys
from apo_local.support.errors import ApoError

LOGGERS = ("off", "files", "mlflow")


def flat_params(data: dict) -> dict[str, str]:
    """A nested config as dotted keys -> strings (what trackers take as parameters)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in flatten_keys(data).items()}


def round_metrics(entry: dict, totals: dict, metric: str) -> dict[str, float]:
    """One history entry (and the engine totals so far) as numbers: the beam's estimates, whether a new
    prompt got in, the best prompt's tokens, the test metric per round when measured, and the work done."""
    estimates = [e for _, e in entry.get("beam", []) if e is not None]
    out = {
        "beam_best": max(estimates) if estimates else 0.0,
        "beam_mean": sum(estimates) / len(estimates) if estimates else 0.0,
        "accepted": float(bool(entry.get("accepted"))),
        "best_prompt_tokens": float((entry.get("prompt_tokens") or [0])[0]),
    }
    if entry.get("test"):
        out[f"test_{metric}_best"] = float(entry["test"][0])
    for role, t in totals.items():
        out[f"{role}_prompts"] = float(t.get("prompts", 0))
        out[f"{role}_tokens"] = float(t.get("input_tokens", 0) + t.get("output_tokens", 0))
    return out


class FileTracker:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._metrics = self.folder / "metrics.jsonl"

    def params(self, params: dict[str, str]) -> None:
        from apo_local.support.files import write_json

        write_json(self.folder / "params.json", params)

    def metrics(self, values: dict[str, float], step: int) -> None:
        from apo_local.support.files import atomic_write

        lines = (
            [json.loads(x) for x in self._metrics.read_text(encoding="utf-8").splitlines()]
            if self._metrics.is_file()
            else []
        )
        lines = [x for x in lines if x.get("step") != step] + [{"step": step, "time": round(time.time(), 1), **values}]
        atomic_write(self._metrics, "".join(json.dumps(x) + "\n" for x in sorted(lines, key=lambda x: x["step"])))

    def artifacts(self, run_dir: Path) -> None:
        from apo_local.support.files import write_json

        files = sorted(
            str(p.relative_to(run_dir))
            for p in Path(run_dir).rglob("*")
            if p.is_file() and self.folder not in p.parents and not p.name.endswith(".lock")
        )
        write_json(self.folder / "artifacts.json", {"run_dir": str(Path(run_dir).resolve()), "files": files})

    def close(self) -> None:
        pass


class MLflowTracker:
    def __init__(self, folder: Path, experiment: str, run_name: str):
        import os

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow 3 reports usage unless told not to
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
        try:
            import mlflow
        except ImportError:
            raise ApoError(
                "tracking.logger mlflow: mlflow is not installed here (pip install mlflow), "
                "or use tracking.logger files"
            ) from None
        self.mlflow = mlflow
        folder = Path(folder).resolve()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        mlflow.set_tracking_uri(folder.as_uri())  # a file store: nothing leaves this machine
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_name=run_name)

    def params(self, params: dict[str, str]) -> None:
        self.mlflow.log_params({k: v[:500] for k, v in params.items()})

    def metrics(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(values, step=step)

    def artifacts(self, run_dir: Path) -> None:
        self.mlflow.log_artifacts(str(run_dir))

    def close(self) -> None:
        self.mlflow.end_run()


class NoTracker:
    def params(self, params) -> None: ...
    def metrics(self, values, step) -> None: ...
    def artifacts(self, run_dir) -> None: ...
    def close(self) -> None: ...


def make_tracker(logger: str, folder: str | None, experiment: str, run_dir: Path | None):
    """The tracker ``tracking.logger`` names; ``run_dir``: the run directory (None: a run without one)."""
    if logger == "off":
        return NoTracker()
    if logger == "files":
        if folder is None and run_dir is None:
            raise ApoError("tracking.logger files: set tracking.dir or write a run directory (--out)")
        return FileTracker(Path(folder) if folder else Path(run_dir) / "tracking")
    if logger == "mlflow":
        name = Path(run_dir).name if run_dir else "run"
        return MLflowTracker(Path(folder or "mlruns"), experiment, name)
    raise ApoError(f"tracking.logger {logger!r}: use one of {', '.join(LOGGERS)}")


def check(cfg) -> None:
    """Before any engine starts: the logger can work (mlflow importable; a folder for files)."""
    if cfg.tracking.logger == "mlflow":
        import importlib.util

        if importlib.util.find_spec("mlflow") is None:
            raise ApoError(
                "tracking.logger mlflow: mlflow is not installed here (pip install mlflow), "
                "or use tracking.logger files"
            )


def start(cfg, run_dir: Path | None):
    """A tracker for this run, its parameters logged now."""
    tracker = make_tracker(cfg.tracking.logger, cfg.tracking.dir, cfg.tracking.experiment, run_dir)
    tracker.params(flat_params(cfg.model_dump(mode="json")))
    return tracker


class RoundMetrics:
    """A recorder of the search (``search/events.py``): as each selection ends, the round's metrics logged."""

    def __init__(self, tracker, trace, metric: str):
        self.tracker, self.trace, self.metric = tracker, trace, metric

    def expanded(self, state) -> None:
        pass

    def selected(self, state) -> None:
        entry = state.history[-1]
        self.tracker.metrics(round_metrics(entry, self.trace.totals_dict(), self.metric), int(entry["round"]))

    def finished(self, state) -> None:
        pass


def finish(tracker, result, run_dir: Path | None) -> None:
    """The final test metrics (step: the round after the last), then the run directory's files."""
    final = {
        f"initial_{k}": float(v)
        for k, v in result.initial_test.get("metrics", {}).items()
        if isinstance(v, (int, float))
    }
    final.update(
        {f"best_{k}": float(v) for k, v in result.best_test.get("metrics", {}).items() if isinstance(v, (int, float))}
    )
    tracker.metrics(final, result.rounds_completed + 1)
    if run_dir is not None:
        tracker.artifacts(Path(run_dir))
    tracker.close()
