"""Offline experiment tracking: the plain-file logger and the refusals (no engine)."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from apo_local.run.config import build_config, flag_names
from apo_local.run.tracking import FileTracker, check, flat_params, make_tracker, round_metrics
from apo_local.support.errors import ApoError


def test_off_by_default_and_flags():
    cfg = build_config({})
    assert cfg.tracking.logger == "off"
    assert flag_names()["tracking.logger"] == "tracking-logger" and flag_names()["tracking.dir"] == "tracking-dir"


def test_flat_params():
    assert flat_params({"a": {"b": 1, "c": {"d": "x"}}, "e": None, "f": {}}) == {
        "a.b": "1",
        "a.c.d": "x",
        "e": "null",
        "f": "{}",
    }


def test_round_metrics():
    entry = {
        "round": 2,
        "beam": [["c1", 0.6], ["c2", 0.4]],
        "accepted": True,
        "prompt_tokens": [120, 80],
        "test": [0.55, 0.5],
    }
    totals = {
        "target": {"prompts": 100, "input_tokens": 5000, "output_tokens": 0},
        "optimizer": {"prompts": 4, "input_tokens": 900, "output_tokens": 300},
    }
    m = round_metrics(entry, totals, "f1")
    assert m["beam_best"] == 0.6 and m["beam_mean"] == pytest.approx(0.5) and m["accepted"] == 1.0
    assert m["best_prompt_tokens"] == 120 and m["test_f1_best"] == 0.55
    assert m["target_prompts"] == 100 and m["optimizer_tokens"] == 1200


def test_file_tracker_rewrites_a_round_on_resume(tmp_path):
    t = FileTracker(tmp_path / "tracking")
    t.params({"seed": "0"})
    t.metrics({"beam_best": 0.5}, 1)
    t.metrics({"beam_best": 0.6}, 2)
    t.metrics({"beam_best": 0.61}, 2)  # a resumed run logs round 2 again
    lines = [json.loads(x) for x in (tmp_path / "tracking" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["beam_best"]) for x in lines] == [(1, 0.5), (2, 0.61)]
    (tmp_path / "results.json").write_text("{}")
    t.artifacts(tmp_path)
    assert json.loads((tmp_path / "tracking" / "artifacts.json").read_text())["files"] == ["results.json"]


def test_refusals(tmp_path):
    with pytest.raises(ApoError, match="tracking.dir"):
        make_tracker("files", None, "x", None)
    if importlib.util.find_spec("mlflow") is None:
        with pytest.raises(ApoError, match="mlflow is not installed"):
            check(build_config({"tracking": {"logger": "mlflow"}}))
    with pytest.raises(ApoError, match="tracking.logger"):
        build_config({"tracking": {"logger": "wandb"}})


def test_mlflow_file_store_without_network(tmp_path, monkeypatch):
    """Where mlflow is installed (optional for users; scripts/setup.sh installs mlflow-skinny): a file store, and no
    connection or DNS lookup at all. Skipped without mlflow, except in CI (``CI`` set), where it fails."""
    if importlib.util.find_spec("mlflow") is None:
        why = "mlflow not installed (scripts/setup.sh installs mlflow-skinny)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why}; CI must run the MLflow logger check")
        pytest.skip(why)
    import socket

    from apo_local.run.tracking import MLflowTracker

    attempts = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: attempts.append(addr))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: attempts.append(a) or [])
    t = MLflowTracker(tmp_path / "mlruns", "apo-local", "run")
    t.params({"seed": "0"})
    t.metrics({"beam_best": 0.5}, 1)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    t.artifacts(tmp_path / "run")
    t.close()
    assert not attempts
    assert list((tmp_path / "mlruns").rglob("beam_best")) and list((tmp_path / "mlruns").rglob("results.json"))
