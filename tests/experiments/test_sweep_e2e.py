"""A two-cell sweep on the real engine (the session's SmolLM2-135M, TINY budget): interrupted in
the second cell (Ctrl-C after its round-1 expansion checkpoint), then resumed by re-running the same
sweep: the finished cell is skipped, the interrupted one resumes from its checkpoint. Reports of
the sweep and of a cell render in Chromium.

Both cells use the session engine: the grid varies the selector, not the models, so no second
engine starts (an optimizer-model axis with two names of the same folder would start a second
backend while ``load_engine`` keys backends on the model name; see test_sweep.py for that view).
"""

from __future__ import annotations

import json

import pytest

from apo_local.experiments import sweep as S
from apo_local.run.recorder import RunRecorder
from tests.conftest import TINY

pytestmark = pytest.mark.engine


def copy_cache(source, dest) -> None:
    """A result cache copied as SQLite copies a live database (its WAL included)."""
    import sqlite3

    with sqlite3.connect(source) as src, sqlite3.connect(dest) as dst:
        src.backup(dst)


@pytest.fixture(scope="module")
def interrupted_then_resumed(engine, tiny_run, tmp_path_factory):
    """The ucb cell is the session's TINY run, so the sweep starts from that run's result cache: every engine call
    that repeats one of that run's is answered from it (what this test checks is the sweep's bookkeeping of an
    interrupted and a finished cell; the search itself is checked on that run)."""
    root = tmp_path_factory.mktemp("sweep")
    copy_cache(tiny_run[0].parent / "cache.sqlite", root / "cache.sqlite")
    spec, base = S.parse_sweep(
        {
            "base": {**TINY, "cache": str(root / "cache.sqlite")},
            "grid": {"selection.selector": ["ucb", "successive-halving"]},
        }
    )
    out = root / "sweep"
    cells = S.order_for_engines(S.expand(spec, base))
    first, victim = cells[0].id, cells[1].id
    original = RunRecorder.checkpoint

    def ctrl_c_after_expansion(self, state):
        original(self, state)
        if self.run_dir and self.run_dir.path.name == victim and state.phase == "expanded" and state.round == 1:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunRecorder, "checkpoint", ctrl_c_after_expansion)
        with pytest.raises(KeyboardInterrupt):
            S.run_sweep(spec, base, out)
    after_interrupt = {
        "manifest": {c["id"]: c["status"] for c in S.load_manifest(out)},
        "victim_phase": json.loads((out / victim / "checkpoint.json").read_text())["phase"],
        "victim_results": (out / victim / "results.json").exists(),
        "first_mtime": (out / first / "results.json").stat().st_mtime_ns,
    }
    result = S.run_sweep(spec, base, out)  # the same command again
    return out, first, victim, after_interrupt, result


def test_interrupted_cell_resumes_and_finished_cell_is_skipped(interrupted_then_resumed):
    out, first, victim, before, result = interrupted_then_resumed
    assert before["manifest"] == {first: "done", victim: "interrupted"}
    assert before["victim_phase"] == "expanded" and not before["victim_results"]
    assert result.status == {first: "done", victim: "resumed"}
    assert (out / first / "results.json").stat().st_mtime_ns == before["first_mtime"]  # not run again
    res = json.loads((out / victim / "results.json").read_text())
    assert res["rounds_completed"] == 2 and res["stop_reason"] == "completed"
    assert {c["status"] for c in S.load_manifest(out)} == {"done"}


def test_results_tables(interrupted_then_resumed):
    import csv

    out, first, victim, _, _ = interrupted_then_resumed
    rows = list(csv.DictReader((out / "results.csv").open()))
    cells = {r["cell"]: r for r in rows if r["kind"] == "cell"}
    assert set(cells) == {first, victim}
    assert {r["selector"] for r in cells.values()} == {"ucb", "successive-halving"}
    for cid, r in cells.items():
        res = json.loads((out / cid / "results.json").read_text())
        assert float(r["test_best"]) == pytest.approx(res["best_test"]["metrics"]["f1"])
        assert int(r["target_prompts"]) == res["usage"]["target"]["prompts"] > 0
        assert int(r["optimizer_output_tokens"]) == res["usage"]["optimizer"]["output_tokens"] > 0
        assert float(r["wall_seconds"]) == res["time"]["total"] >= res["time"]["seconds"]  # the whole run
    assert sorted(r["kind"] for r in rows if r["kind"] != "cell") == ["mean", "mean", "std", "std"]
    md = (out / "results.md").read_text()
    assert first in md and victim in md and "± " in md


def test_reports_render_in_chromium(interrupted_then_resumed, tmp_path):
    from apo_local.report import write_report
    from tests.report.test_report import assert_renders, require_chromium

    pytest.importorskip("matplotlib")
    out, first, victim, _, _ = interrupted_then_resumed
    sweep_page = write_report(out, cells=True)
    cell_page = out / victim / "report.html"
    assert cell_page.is_file() and f'href="{victim}/report.html"' in sweep_page.read_text()
    assert "Candidate lineage" in cell_page.read_text() and "Predicted vs true labels" in cell_page.read_text()
    require_chromium()
    assert_renders(sweep_page, tmp_path, min_plots=1)
    assert_renders(cell_page, tmp_path, min_plots=6)
