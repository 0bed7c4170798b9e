"""Calibrated label scoring end to end on the real engine (embedded SmolLM2-135M): ``apo-local evaluate
--calibration batch`` on 16 Liar rows; the offsets it reports are the engine's own label log-probs on the 32
calibration inputs, averaged, and every prediction it writes is reproduced from what it stored."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from apo_local import calibration as calib
from apo_local.tasks import Example

pytestmark = pytest.mark.engine
ROWS = 16


def evaluate(tmp_path, calibration: str) -> tuple[dict, list[dict]]:
    from apo_local.commands.cli import cli

    preds = tmp_path / f"{calibration}.jsonl"
    res = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--task",
            "liar",
            "--limit",
            str(ROWS),
            "--calibration",
            calibration,
            "--cache",
            str(tmp_path / "cache.sqlite"),
            "--json",
            "--out",
            str(preds),
        ],
    )
    assert res.exit_code == 0, (res.output[-2000:], res.exception)
    report = json.loads(res.stdout[res.stdout.index("{") :])
    return report, [json.loads(line) for line in preds.read_text().splitlines()]


def test_batch_calibration_end_to_end(engine, liar, tmp_path):
    report, records = evaluate(tmp_path, "batch")
    cal = report["calibration"]
    assert cal["method"] == "batch" and cal["inputs"] == calib.CALIBRATION_ROWS and set(cal["offsets"]) == {"Yes", "No"}

    # The offsets are each label's mean (label-normalised) log-prob over the calibration inputs, scored here
    # again through the engine directly.
    inputs = calib.calibration_inputs("batch", [ex.input for ex in liar.split("train")])
    scores = engine.score_choices(
        [liar.render(liar.initial_instruction, Example(f"c{i}", text, "")) for i, text in enumerate(inputs)],
        liar.labels,
    )
    rows = [calib.normalised(s.logprobs) for s in scores]
    for j, label in enumerate(liar.labels):
        assert cal["offsets"][label] == pytest.approx(sum(r[j] for r in rows) / len(rows), abs=1e-4)

    # Every prediction is the label with the highest stored log-prob minus its offset.
    assert len(records) == ROWS
    for r in records:
        assert set(r["logprobs"]) == {"Yes", "No"} and all(math.isfinite(v) for v in r["logprobs"].values())
        assert r["parsed"] == max(
            liar.labels, key=lambda y: (r["logprobs"][y] - cal["offsets"][y], -liar.labels.index(y))
        )

    # Uncalibrated, the same rows get the plain argmax of the same log-probs, and no offsets are reported.
    plain, plain_records = evaluate(tmp_path, "none")
    assert "calibration" not in plain
    assert [r["parsed"] for r in plain_records] == [
        max(liar.labels, key=lambda y: (r["logprobs"][y], -liar.labels.index(y))) for r in records
    ]
    assert all("logprobs" not in r for r in plain_records)
