"""The CLI on the real engine: stdout carries the result and nothing else; what is already known (a
finished run, a fully cached evaluation) is answered without loading a model; generation tasks.

Cost control: two subprocesses start an engine (the session's one CLI optimize, shared with the air-gap
checks, and one evaluate); their repeats load none. The rest runs in-process on the shared ``engine``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "apo_local.commands.cli"]
TABLE = re.compile(
    r"^(|headline: .*|\s+train est\.\s+test f1 \[95% CI\]\s+test acc \(= micro-F1\)\s+prompt"
    r"|(selected \(.+?\)|initial|best constant answer( = train majority)?"
    r"|best of beam \(picked on test: optimistic\))\s+\S+\s+[\d.]+ \[[\d.]+, [\d.]+\]\s+.*"
    r"|selected - initial: f1 .*|selected - always '(Yes|No)': f1 .*|attribution \(test f1\): .*"
    r"|power: with .*|warning: the selected prompt predicts .*|warning: the final pick is made on \d+ validation rows.*"
    r"|(target|optimizer)\s+calls=.*|rounds=\d+ stop=.*|optimizer replies=\d+ .*|time: total .*|run directory: .*)$"
)


def _run(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "APO_LOCAL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONWARNINGS", None)  # as a user's shell has it
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)


def test_optimize_prints_only_the_table_and_resumes_a_finished_run_without_a_model(airgapped_cli_run, tmp_path):
    proc, run = airgapped_cli_run.proc, airgapped_cli_run.run  # the session's one CLI optimize (a user's shell)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = [line for line in proc.stdout.splitlines() if not TABLE.match(line)]
    assert not bad, proc.stdout  # no WARNING lines, no progress bars, no log lines: the table only
    assert any(line.startswith("optimizer replies=") for line in proc.stdout.splitlines())  # what became of them
    assert "loading model" in proc.stderr  # logs go to stderr

    results = json.loads((run / "results.json").read_text())
    t = results["time"]
    assert {"seconds", "total", "model_load", "search", "final_test", "other"} <= set(t)
    assert t["model_load"] > 0 and t["search"] > 0 and t["final_test"] > 0
    assert t["total"] == pytest.approx(t["model_load"] + t["search"] + t["final_test"] + t["other"], abs=0.3)
    assert f"time: total {t['total']} s = model load {t['model_load']} s + search {t['search']} s" in proc.stdout

    records = [json.loads(line) for line in (run / "predictions" / "test-initial.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(set(r) >= {"id", "output", "parsed", "gold", "correct"} for r in records)
    accuracy = sum(r["correct"] for r in records) / 8
    assert accuracy == pytest.approx(results["initial_test"]["metrics"]["accuracy"])
    assert (run / "predictions" / "test-best.jsonl").is_file()

    again = _run(["optimize", "--resume", run], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "loading model" not in again.stderr and "finished run" in again.stderr
    assert again.stdout == proc.stdout


def test_evaluate_json_is_the_whole_stdout_and_a_cached_evaluation_loads_no_model(tmp_path):
    args = ["evaluate", "--limit", "6", "--json"]
    first = _run(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads(first.stdout)  # all of stdout is one JSON document
    assert report["n"] == 6 and report["mode"] == "logprobs"
    assert "loading model" in first.stderr

    second = _run(args, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout)["metrics"] == report["metrics"]
    assert "loading model" not in second.stderr, second.stderr  # every row came from the result cache


def _task(root: Path, rows: list[dict], kind: str, extra: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("train.jsonl", "test.jsonl"):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "template.jinja").write_text("{{ instruction }}\n\nQuestion: {{ input }}\nAnswer:")
    (root / "task.yaml").write_text(
        yaml.safe_dump(
            {
                "name": root.name,
                "kind": kind,
                "template": "template.jinja",
                **extra,
                "data": {
                    "input_column": "text",
                    "label_column": "label",
                    "splits": {"train": "train.jsonl", "test": "test.jsonl"},
                },
            }
        )
    )
    return root / "task.yaml"


def test_evaluate_generation_task_stores_every_prediction(engine, tmp_path):
    from apo_local.commands.cli import cli

    rows = [
        {"text": f"How many apples are in a bag of {n} apples and {m} more apples?", "label": str(n + m)}
        for n, m in ((2, 3), (4, 1), (10, 5), (7, 7))
    ]
    task = _task(
        tmp_path / "count",
        rows,
        "generation",
        {"metric": "numeric_match", "instruction_text": "Work it out, then give the number."},
    )
    out = tmp_path / "preds.jsonl"
    res = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--task",
            str(task),
            "--max-tokens",
            "24",
            "--json",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "c.sqlite"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["mode"] == "generate" and report["max_tokens"] == 24 and report["metric"] == "numeric_match"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [f"test-{i}" for i in range(4)]
    assert [r["gold"] for r in records] == [r["label"] for r in rows]
    assert report["metrics"]["unparsed"] == sum(r["parsed"] is None for r in records)
    assert report["metrics"]["accuracy"] == sum(r["correct"] for r in records) / 4
    for r in records:  # parsed = the last number of the output
        numbers = re.findall(r"\d+(?:\.\d+)?", r["output"].replace(",", ""))
        assert r["parsed"] == (str(int(float(numbers[-1]))) if numbers else None)
    assert report["usage"]["output_tokens"] > 4 * 8  # longer answers than the old fixed 8 tokens


def test_evaluate_says_when_labels_were_mapped_and_when_the_limit_is_capped(engine, tmp_path, caplog):
    from apo_local.commands.cli import cli
    from apo_local.tasks import load_task

    liar = load_task("liar")
    rows = [{"text": ex.input, "label": ex.label.lower()} for ex in liar.split("test")[:4]]
    task = _task(
        tmp_path / "lower",
        rows,
        "classification",
        {"labels": ["Yes", "No"], "metric": "accuracy", "instruction_text": liar.initial_instruction},
    )
    with caplog.at_level(logging.INFO, logger="apo_local"):
        res = CliRunner().invoke(
            cli, ["evaluate", "--task", str(task), "--limit", "10", "--cache", str(tmp_path / "c.sqlite")]
        )
    assert res.exit_code == 0, res.output
    from collections import Counter

    counts = Counter(f"{r['label']} -> {r['label'].capitalize()}" for r in rows)
    assert "labels mapped: 4 (" in res.stdout and all(f"{k}: {v}" in res.stdout for k, v in counts.items())
    messages = [r.getMessage() for r in caplog.records]
    assert "--limit 10 is larger than the test split (4 examples): using all 4" in messages
    assert "(n=4, mode=logprobs)" in res.stdout
