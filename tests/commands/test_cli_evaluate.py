"""``evaluate`` shows what ``optimize`` shows about one prompt: the best constant answer on the same rows (with
the paired difference), the label-lean warning, and counts that say what they count (wrong answers, engine
errors). A stand-in engine that always prefers 'Yes' plays the target: this is the command's logic, not a model's."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from apo_local.commands.cli import cli
from apo_local.engine.protocol import ChoiceScores
from apo_local.tasks import load_task
from tests.helpers.scripted import ScriptedEngine


def AlwaysYes() -> ScriptedEngine:
    """The shared scripted engine as a target that answers Yes to every row."""
    return ScriptedEngine(
        scores=lambda p, choices: ChoiceScores(tuple(0.0 if c == "Yes" else -5.0 for c in choices), 1)
    )


@pytest.fixture
def always_yes(monkeypatch):
    monkeypatch.setattr("apo_local.engine.load_engine", lambda *a, **k: AlwaysYes())


def test_evaluate_json_has_the_constant_baseline_the_lean_warning_and_named_counts(always_yes):
    res = CliRunner().invoke(cli, ["evaluate", "--task", "liar", "--limit", "40", "--cache", "off", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    rows = load_task("liar").split("test")[:40]
    no = sum(ex.label == "No" for ex in rows)
    assert "errors" not in report and report["engine_errors"] == 0 and report["wrong"] == no
    constant = report["constant_baselines"]
    assert constant["best"] == "Yes"  # the prompt's answers are the constant's: the same scores
    assert constant["by_label"]["Yes"]["metrics"][report["metric"]] == report["metrics"][report["metric"]]
    assert report["prompt_vs_constant"][report["metric"]]["diff"] == 0
    assert report["warnings"] == [
        f"warning: the prompt predicts 'No' for 0% of test rows (true share {no / 40:.0%}): the target leans this way "
        "with this prompt: look at a constant answer's score"
    ]


def test_evaluate_table_names_the_constant_and_warns(always_yes):
    res = CliRunner().invoke(cli, ["evaluate", "--task", "liar", "--limit", "40", "--cache", "off"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "wrong=" in lines[0] and "engine errors=0" in lines[0]
    assert any(line.startswith("best constant answer: always 'Yes'") for line in lines)
    assert any(line.startswith("prompt - always 'Yes': f1 +0.000") for line in lines)
    assert lines[-1].startswith("warning: the prompt predicts 'No' for 0% of test rows")
