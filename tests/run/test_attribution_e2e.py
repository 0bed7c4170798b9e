"""Edit attribution on the real engine: a tiny run's results.json holds it (lineage from the initial prompt to the
selected one, sentence entries with intervals), ``apo-local explain`` recomputes it on the finished run from the
result cache (also on a run made before attribution existed), and the run's report has its section."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import yaml

pytestmark = pytest.mark.engine


def _copy(run, dest):
    """A copy of the session's tiny run (its config names the same result cache): explain may rewrite it."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".lock"))
    return dest


def _has_interval(g: dict) -> bool:
    return g is not None and len(g["ci"]) == 2 and g["ci"][0] <= g["diff"] <= g["ci"][1] and "excludes_zero" in g


def test_a_tiny_run_has_its_attribution(tiny_run):
    run, result = tiny_run
    a = json.loads((run / "results.json").read_text())["attribution"]
    assert a == result.attribution and a["metric"] == "f1" and a["lineage_complete"]
    assert a["rows"] == {"validation": 8, "test": 12}
    assert a["lineage"][0]["text"] == result.initial_prompt and a["lineage"][0]["operator"] == "initial"
    assert a["lineage"][-1]["text"] == result.selected_prompt
    assert len(a["steps"]) == len(a["lineage"]) - 1 and a["summary"]["steps"] == len(a["steps"])
    records = {
        c["id"]: c
        for f in sorted((run / "rounds").glob("round-*.json"))
        for c in json.loads(f.read_text())["candidates"]
    }
    for step, _node, parent in zip(a["steps"], a["lineage"][1:], a["lineage"]):
        assert step["parent"] == parent["id"] and records[step["id"]]["operator"] == step["operator"]
        assert step["gradient"] == records[step["id"]]["gradient"]
        assert _has_interval(step["test"]) and _has_interval(step["validation"])
    assert a["units"] and all(_has_interval(u["test"]) and _has_interval(u["validation"]) for u in a["units"])
    assert {u["kind"] for u in a["units"]} == {"sentence"}
    from apo_local.commands.summary import summary_lines

    line = next(x for x in summary_lines(result) if x.startswith("attribution (test f1): "))
    assert "step gains distinguishable from zero" in line and "sentence" in line
    print("\nCLI line:", line)


def test_explain_recomputes_it_from_the_cache_and_writes_it(tiny_run, tmp_path, monkeypatch, capsys):
    from apo_local.commands.cli import _run_cli

    run, result = tiny_run
    copy = _copy(run, tmp_path / "run")
    monkeypatch.setattr(sys, "argv", ["apo-local", "explain", str(copy)])
    assert _run_cli() == 0
    out = capsys.readouterr()
    print("\n" + out.out)
    assert "lineage (initial -> selected):" in out.out and "units of the selected prompt" in out.out
    assert out.out.count(" test ") >= len(result.attribution["units"]) and "[" in out.out
    assert "attribution (test f1): " in out.out and "explain:" not in out.out  # logs: stderr
    written = json.loads((copy / "attribution.json").read_text())
    assert written == result.attribution == json.loads((copy / "results.json").read_text())["attribution"]


def test_explain_works_on_a_run_made_before_attribution(tiny_run, tmp_path):
    from apo_local.commands.explain import explain

    run, result = tiny_run
    copy = _copy(run, tmp_path / "old")
    res = json.loads((copy / "results.json").read_text())
    del res["attribution"]
    (copy / "results.json").write_text(json.dumps(res))
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["evaluation"].pop("attribution")
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert explain(copy) == result.attribution
    assert json.loads((copy / "results.json").read_text())["attribution"] == result.attribution


def test_the_report_of_the_run_has_the_edit_attribution_section(tiny_run, tmp_path):
    pytest.importorskip("matplotlib")
    from apo_local.report import write_report
    from tests.report.test_report import CHROMIUM, assert_renders

    run, result = tiny_run
    page_file = write_report(_copy(run, tmp_path / "run"))
    page = page_file.read_text()
    assert '<h2 id="attribution">Edit attribution</h2>' in page and "test contribution [95% CI]" in page
    assert page.count("<tr>") > len(result.attribution["units"]) + len(result.attribution["steps"])
    if CHROMIUM:
        assert_renders(page_file, tmp_path, min_plots=4)
