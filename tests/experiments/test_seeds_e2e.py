"""``apo-local optimize --seeds 3`` on the real engine: three run directories, then a verdict on selected vs
initial over the seeds and test rows; re-running skips the finished seeds."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.engine


def test_three_seeds_end_with_a_verdict(engine, tmp_path):
    from apo_local.commands.cli import cli

    out = tmp_path / "seeds"
    args = [
        "optimize",
        "--task",
        "liar",
        "--preset",
        "smoke",
        "--seeds",
        "3",
        "--out",
        str(out),
        "--cache",
        str(tmp_path / "cache.sqlite"),
        "--optimizer-max-tokens",
        "48",
        "--test-limit",
        "12",
        "--validation-rows",
        "8",
        "--attribution",
        "false",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("verdict: selected vs initial: ") and "3 seeds × 12 test rows" in lines[-1]
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    # What the engine run can prove (the verdict rule itself is tested on known inputs in
    # tests/experiments/test_compare_stats.py): each seed's difference is that run's selected minus initial test score, and
    # with 3 seeds (t, 2 degrees of freedom) a change is called only when every seed points that way.
    vs = summary["selected_vs_initial"]
    for s, d in zip((0, 1, 2), vs["per_seed"]):
        results = json.loads((out / f"seed-{s}" / "results.json").read_text())
        m = results["metric"]
        assert d == pytest.approx(results["selected_test"]["metrics"][m] - results["initial_test"]["metrics"][m])
        assert results["headline"].startswith("headline: ")
        assert any(line.startswith(f"   {s}  ") and f"seed-{s}" in line for line in lines)
    assert len(vs["mcnemar"]) == 3 and vs["examples"] == 12  # McNemar per seed; power from the 12 distinct rows
    if summary["verdict"] == "better":
        assert min(vs["per_seed"]) > 0
    elif summary["verdict"] == "worse":
        assert max(vs["per_seed"]) < 0
    else:
        assert summary["verdict"] == "no detectable change" and "would" in lines[-1]
    before = (out / "seed-1" / "trace.jsonl").read_text()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and again.output.strip().splitlines()[-1] == lines[-1]
    assert (out / "seed-1" / "trace.jsonl").read_text() == before  # finished seeds are skipped
