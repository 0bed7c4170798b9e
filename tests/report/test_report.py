"""Reports from run and sweep directories, checked in a real headless browser (Debian's Chromium).

No engine here: the run directory is written by hand with the exact layout a run leaves
(results.json, rounds/round-NN.json, trace.jsonl, config.yaml), so this file runs in seconds.
The end-to-end tests (test_sweep_e2e.py) render reports of real runs with the same checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytest.importorskip("matplotlib")

from apo_local.report import data as D  # noqa: E402
from apo_local.report import plots as P  # noqa: E402
from apo_local.report import write_report  # noqa: E402
from apo_local.support.errors import ApoError  # noqa: E402

CHROMIUM = next(
    (
        p
        for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
        if p and os.access(p, os.X_OK)
    ),
    None,
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
]


def require_chromium() -> None:
    """Skip a browser check when Chromium is absent, except in CI (``CI`` set), where it fails:
    set-up installs Chromium, so its absence there is a broken set-up, not a reason to check less."""
    if CHROMIUM is None:
        why = "Chromium not installed (scripts/setup.sh installs it: apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why}; CI must run the browser checks of reports")
        pytest.skip(why)


@pytest.fixture
def browser():
    require_chromium()


needs_browser = pytest.mark.usefixtures("browser")


# -- browser helpers (used by test_sweep_e2e.py too) ----------------------------------------------


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HOME": str(tmp)},
    )


def plots_loaded(html: Path, tmp: Path) -> tuple[int, int]:
    """(expected, loaded) plot images after the page's load event, read from the live DOM."""
    proc = _chromium(["--virtual-time-budget=5000", "--dump-dom", html.resolve().as_uri()], tmp)
    dom = proc.stdout
    exp = re.search(r'data-plots-expected="(\d+)"', dom)
    got = re.search(r'data-plots-loaded="(\d+)"', dom)
    assert exp and got, f"no DOM from Chromium (rc={proc.returncode}): {proc.stderr[-1500:]}"
    return int(exp.group(1)), int(got.group(1))


def screenshot(html: Path, tmp: Path, height: int = 2400) -> Path:
    png = tmp / f"{html.parent.name}-{html.stem}.png"
    proc = _chromium(
        [f"--screenshot={png}", f"--window-size=1280,{height}", "--virtual-time-budget=5000", html.resolve().as_uri()],
        tmp,
    )
    assert png.is_file(), f"no screenshot (rc={proc.returncode}): {proc.stderr[-1500:]}"
    return png


def colourful_pixels(png: Path) -> int:
    """Pixels with a clearly saturated colour: plots have many (bars, markers, lines, heatmaps);
    text, tables and the page background are grey, so a page whose images did not render has few."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((rgb.max(axis=-1) - rgb.min(axis=-1) > 60).sum())


def assert_renders(html: Path, tmp: Path, min_plots: int) -> Path:
    expected, loaded = plots_loaded(html, tmp)
    assert expected >= min_plots, f"{html}: {expected} plots on the page, wanted >= {min_plots}"
    assert loaded == expected, f"{html}: only {loaded} of {expected} plot images decoded in Chromium"
    shot = screenshot(html, tmp)
    n = colourful_pixels(shot)
    assert n > 20_000, f"{shot}: only {n} coloured pixels; the plots did not render"
    return shot


# -- a run directory written by hand --------------------------------------------------------------

INITIAL = "Determine whether the Statement is a lie (Yes) or not (No) based on the Context."
EDIT = "Decide if the Statement is a lie (Yes) or not (No); weigh the speaker's record and the Context."
PARA = "Say Yes if the Statement is a lie, otherwise No, judging by the Context."


def _cand(text, rnd, op, parent, cid, est, status, gradient=None):
    return {
        "text": text,
        "round": rnd,
        "operator": op,
        "parent": parent,
        "gradient": gradient,
        "id": cid,
        "estimate": est,
        "pulls": 16 if est is not None else 0,
        "status": status,
    }


def _evaluation(f1, pred, confusion):
    true = {t: sum(r.values()) for t, r in confusion.items()}
    return {
        "metrics": {"f1": f1, "accuracy": 0.5, "n": 20, "unparsed": 0},
        "predicted_distribution": pred,
        "true_distribution": true,
        "confusion": confusion,
        "errors": 0,
    }


def make_run(path: Path, *, finished: bool = True, best_pred: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "rounds").mkdir()
    (path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "liar",
                "seed": 0,
                "search": {"rounds": 2, "proposer": "protegi"},
                "selection": {"selector": "ucb"},
                "target": {"model": None},
                "optimizer": {"model": None},
            }
        )
    )
    grad = "The prompt ignores the speaker's history of false claims."
    r1 = [
        _cand(INITIAL, 0, "initial", None, "init000001", 0.55, "beam"),
        _cand(EDIT, 1, "edit", "init000001", "edit000001", 0.62, "beam", grad),
        _cand(PARA, 1, "paraphrase", "edit000001", "para000001", 0.40, "not selected", grad),
    ]
    r2 = [
        _cand(INITIAL, 0, "initial", None, "init000001", 0.50, "not selected"),
        _cand(EDIT, 1, "edit", "init000001", "edit000001", 0.70, "beam", grad),
        _cand(EDIT + " Be strict.", 2, "edit", "edit000001", "edit000002", 0.75, "beam", "Too lenient."),
        _cand(
            PARA + " Always.",
            2,
            "paraphrase",
            "edit000002",
            "para000002",
            None,
            "dropped: over max_expansion",
            "Too lenient.",
        ),
    ]
    for r, cands in ((1, r1), (2, r2)):
        (path / "rounds" / f"round-{r:02d}.json").write_text(
            json.dumps({"round": r, "phase": "selected", "candidates": cands})
        )
    trace = [
        {
            "role": "target",
            "op": "score_choices",
            "phase": "minibatch",
            "round": 1,
            "prompts": 8,
            "input_tokens": 900,
            "output_tokens": 0,
            "cache_hits": 0,
            "seconds": 1.5,
            "errors": 0,
        },
        {
            "role": "optimizer",
            "op": "generate",
            "phase": "gradient",
            "round": 1,
            "prompts": 2,
            "input_tokens": 600,
            "output_tokens": 180,
            "cache_hits": 0,
            "seconds": 4.0,
            "errors": 0,
        },
        {"event": "parse_failure", "phase": "gradient", "round": 1, "reason": "no tags"},
        {
            "role": "optimizer",
            "op": "generate",
            "phase": "edit",
            "round": 1,
            "prompts": 2,
            "input_tokens": 500,
            "output_tokens": 90,
            "cache_hits": 1,
            "seconds": 2.0,
            "errors": 0,
        },
        {
            "role": "target",
            "op": "score_choices",
            "phase": "select",
            "round": 1,
            "prompts": 48,
            "input_tokens": 5000,
            "output_tokens": 0,
            "cache_hits": 3,
            "seconds": 6.0,
            "errors": 0,
        },
        {
            "role": "target",
            "op": "score_choices",
            "phase": "final",
            "round": 2,
            "prompts": 60,
            "input_tokens": 6000,
            "output_tokens": 0,
            "cache_hits": 0,
            "seconds": 7.0,
            "errors": 0,
        },
    ]
    (path / "trace.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trace))
    if finished:
        best_pred = best_pred or {"Yes": 19, "No": 1}
        best_conf = {"Yes": {"Yes": 10}, "No": {"Yes": best_pred["Yes"] - 10, "No": best_pred["No"]}}
        res = {
            "metric": "f1",
            "initial_prompt": INITIAL,
            "best_prompt": EDIT + " Be strict.",
            "selected_prompt": EDIT + " Be strict.",
            "initial_test": _evaluation(
                0.45, {"Yes": 9, "No": 11}, {"Yes": {"Yes": 5, "No": 5}, "No": {"Yes": 4, "No": 6}}
            ),
            "best_test": _evaluation(0.67, best_pred, best_conf),
            "selected_test": _evaluation(0.67, best_pred, best_conf),
            "beam": [
                {"id": "edit000002", "text": EDIT + " Be strict.", "estimate": 0.75, "test": 0.67},
                {"id": "edit000001", "text": EDIT, "estimate": 0.70, "test": 0.6},
            ],
            "rounds_completed": 2,
            "stop_reason": "completed",
            "usage": {
                "target": {"calls": 3, "prompts": 116, "input_tokens": 11900, "output_tokens": 0},
                "optimizer": {"calls": 2, "prompts": 4, "input_tokens": 1100, "output_tokens": 270},
            },
            "faults": {"parse_failure": 1},
            "history": [
                {"round": 1, "beam": [["edit000001", 0.62], ["init000001", 0.55]], "test": [0.6, 0.45]},
                {"round": 2, "beam": [["edit000002", 0.75], ["edit000001", 0.7]], "test": [0.67, 0.6]},
            ],
            "time": {
                "seconds": 20.5,
                "by_role": {"target": 14.5, "optimizer": 6.0},
                "cache_hits": {"target": 3, "optimizer": 1},
            },
        }
        (path / "results.json").write_text(json.dumps(res))
    return path


# -- data -----------------------------------------------------------------------------------------


def test_lineage_usage_lengths_and_diff(tmp_path):
    run = D.load_run(make_run(tmp_path / "run"))
    nodes = {n["id"]: n for n in D.lineage(run)}
    assert set(nodes) == {"init000001", "edit000001", "para000001", "edit000002", "para000002"}
    assert nodes["edit000002"]["fate"] == "selected" and nodes["edit000001"]["fate"] == "beam"
    assert nodes["edit000001"]["kept_rounds"] == [2] and nodes["init000001"]["kept_rounds"] == [1, 2]
    assert nodes["para000001"]["parent"] == "edit000001" and nodes["para000001"]["gradient"]
    assert nodes["para000002"]["fate"].startswith("dropped")

    usage = {(u["role"], u["phase"]): u for u in D.usage_by_role_phase(run)}
    assert usage[("target", "select")]["prompts"] == 48 and usage[("optimizer", "gradient")]["output_tokens"] == 180
    assert sum(u["input_tokens"] for u in usage.values()) == 11900 + 1100  # trace totals == results usage
    assert D.faults(run) == [{"event": "parse_failure", "phase": "gradient", "count": 1}]

    lengths = D.prompt_lengths(run)
    assert [r["round"] for r in lengths] == [1, 2] and lengths[1]["words_max"] == len((EDIT + " Be strict.").split())

    s = D.score_per_round(run)
    assert s["initial_test"] == 0.45 and s["selected_test"] == 0.67 and s["test"] == [(1, 0.6), (2, 0.67)]
    assert s["best_estimate"] == [(1, 0.62), (2, 0.75)] and s["initial_estimate"] == 0.55

    ops = D.prompt_diff("a b c", "a x c")
    assert ops == [("equal", "a "), ("delete", "b"), ("insert", "x"), ("equal", " c")]


def test_the_report_shows_the_selected_prompt_not_the_best_of_beam_picked_on_test(tmp_path):
    """The search returns the selected prompt (picked without the test split); the best of beam, picked on the
    test rows, is optimistic and appears only in the summary's row that says so."""
    path = make_run(tmp_path / "run")
    res = json.loads((path / "results.json").read_text())
    res.update(
        selected_prompt=EDIT,
        selected_test=_evaluation(0.6, {"Yes": 12, "No": 8}, {"Yes": {"Yes": 8, "No": 2}, "No": {"Yes": 4, "No": 6}}),
    )
    (path / "results.json").write_text(json.dumps(res))
    run = D.load_run(path)
    assert D.chosen(run.results) == (EDIT, res["selected_test"])
    assert D.score_per_round(run)["selected_test"] == 0.6
    cls = D.classification(run)
    assert cls["selected"] == {"Yes": 12, "No": 8} and cls["confusion"]["Yes"] == {"Yes": 8, "No": 2}
    fates = {n["id"]: n["fate"] for n in D.lineage(run)}
    assert fates["edit000001"] == "selected" and fates["edit000002"] == "beam"
    old = {k: v for k, v in res.items() if k not in ("selected_prompt", "selected_test")}  # a run from before
    assert D.chosen(old) == (EDIT + " Be strict.", res["best_test"])


def test_prevalence_hacking_warning(tmp_path):
    hacked = D.classification(D.load_run(make_run(tmp_path / "hacked", best_pred={"Yes": 19, "No": 1})))
    assert [(w["prompt"], w["label"]) for w in hacked["warnings"]] == [("selected", "No")]
    kept = make_run(tmp_path / "kept", best_pred={"Yes": 19, "No": 1})
    res = json.loads((kept / "results.json").read_text())
    res.update(selected_prompt=res["initial_prompt"], selected_test=res["best_test"])
    (kept / "results.json").write_text(json.dumps(res))
    assert [(w["prompt"], w["label"]) for w in D.classification(D.load_run(kept))["warnings"]] == [
        ("selected (= initial)", "No")
    ]  # the search kept the initial prompt: one warning, not two
    fine = D.classification(D.load_run(make_run(tmp_path / "fine", best_pred={"Yes": 11, "No": 9})))
    assert fine["warnings"] == []
    assert fine["true"] == {"Yes": 10, "No": 10}


# -- plots ----------------------------------------------------------------------------------------


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def _titles_clear(fig) -> list[str]:
    """The panel titles the figure title overlaps (as drawn)."""
    renderer = _drawn(fig)
    top = fig._suptitle.get_window_extent(renderer)
    return [ax.get_title() for ax in fig.axes if ax.get_title() and top.overlaps(ax.title.get_window_extent(renderer))]


def test_usage_plot_figure_title_clears_the_panel_titles(tmp_path):
    fig = P.usage_figure(D.usage_by_role_phase(D.load_run(make_run(tmp_path / "run"))))
    assert fig._suptitle is not None and [ax.get_title() for ax in fig.axes] == ["tokens (input + output)", "seconds"]
    assert _titles_clear(fig) == []


def test_optimizer_size_plot_figure_title_clears_the_panel_titles():
    from apo_local.experiments.sweep.size_view import optimizer_size_figure

    rows = [
        {
            "series": "all",
            "optimizer": name,
            "parameters": n,
            "metric": "f1",
            "test_selected": 0.6,
            "test_selected_std": 0.1,
            "test_initial": 0.45,
            "test_constant": 0.68,
            "optimizer_tokens": 1800.0,
            "optimizer_tokens_std": 200.0,
        }
        for name, n in (("small", 135_000_000), ("big", 7_600_000_000))
    ]
    assert _titles_clear(optimizer_size_figure(rows)) == []


def test_score_plot_keeps_train_estimates_and_test_metric_apart(tmp_path):
    s = D.score_per_round(D.load_run(make_run(tmp_path / "run")))
    train, test = P.score_figure(s).axes
    assert "train" in train.get_ylabel() and "test" not in train.get_ylabel()
    assert test.get_ylabel() == "test f1" and train.get_shared_x_axes().joined(train, test)
    # every test-split series is on the test panel, none on the train panel
    assert all("test" not in line.get_label() for line in train.get_lines() + train.collections)
    test_points = {(x, y) for line in test.get_lines() for x, y in zip(line.get_xdata(), line.get_ydata())}
    assert {(1, 0.6), (2, 0.67)} <= test_points and any(y == 0.45 for _, y in test_points)
    assert any(label.startswith("selected prompt, test f1") for label in test.get_legend_handles_labels()[1])
    ys = {round(float(y), 3) for coll in train.collections for _, y in coll.get_offsets()}
    assert ys == {0.4, 0.5, 0.55, 0.62, 0.7, 0.75}  # candidates' and beam's estimates, not test scores
    # named after the task's metric
    train, test = P.score_figure({**s, "metric": "accuracy"}).axes
    assert test.get_ylabel() == "test accuracy" and "accuracy" in test.get_title()


def test_lineage_plot_marks_candidates_that_were_never_scored(tmp_path):
    import numpy as np

    nodes = D.lineage(D.load_run(make_run(tmp_path / "run")))
    ax = P.lineage_figure(nodes).axes[0]
    marks = {c.get_gid(): c for c in ax.collections if c.get_gid()}
    assert set(marks) == {f"node:{n['id']}" for n in nodes}
    dropped, scored = marks["node:para000002"], marks["node:para000001"]  # both paraphrases
    assert not np.array_equal(dropped.get_paths()[0].vertices, scored.get_paths()[0].vertices)  # another marker
    same = [marks[f"node:{i}"].get_paths()[0].vertices for i in ("init000001", "edit000001", "edit000002")]
    assert all(np.array_equal(v, scored.get_paths()[0].vertices) for v in same)
    assert P.UNSCORED in [t.get_text() for t in ax.get_legend().get_texts()]
    labels = [t.get_text() for t in ax.texts]
    assert "para00 dropped" in labels and "para00 0.40" in labels


# -- the page -------------------------------------------------------------------------------------


def test_run_report_is_self_contained(tmp_path):
    run = make_run(tmp_path / "run")
    html_file = write_report(run)
    page = html_file.read_text()
    assert html_file == run / "report.html"
    for name in ("score-per-round", "label-distribution", "confusion-selected", "lineage", "usage", "prompt-length"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 5000, name
    assert page.count('<img class="plot"') == int(re.search(r'data-plots-expected="(\d+)"', page).group(1)) >= 6
    # offline: no external resource of any kind
    assert not re.search(r'(src|href)="(https?:)?//', page) and "@import" not in page and "url(http" not in page
    assert "prevalence hacking" in page and "<del>" in page and "<ins>" in page
    assert "The prompt ignores the speaker" in page  # gradient text in the lineage table
    assert '<span class="fate-dropped">dropped: over max_expansion</span>' in page


def test_unfinished_run_still_reports(tmp_path):
    run = make_run(tmp_path / "run", finished=False)
    page = write_report(run).read_text()
    assert "has not finished" in page and "lineage" in page.lower()


def test_not_a_run_dir(tmp_path):
    from apo_local.support.errors import ApoError

    with pytest.raises(ApoError, match="neither a run directory"):
        write_report(tmp_path)


@needs_browser
def test_run_report_renders_in_chromium(tmp_path):
    html_file = write_report(make_run(tmp_path / "run"))
    assert_renders(html_file, tmp_path, min_plots=6)


@needs_browser
def test_screenshot_check_fails_without_plots(tmp_path):
    """The screenshot test must catch a page whose plots do not render."""
    html_file = write_report(make_run(tmp_path / "run"))
    broken = html_file.with_name("broken.html")
    broken.write_text(
        re.sub(r'src="data:image/png;base64,[^"]+"', 'src="data:image/png;base64,AAAA"', html_file.read_text())
    )
    expected, loaded = plots_loaded(broken, tmp_path)
    assert expected >= 6 and loaded == 0
    with pytest.raises(AssertionError):
        assert_renders(broken, tmp_path, min_plots=6)
    assert colourful_pixels(screenshot(broken, tmp_path)) < 20_000


def test_report_has_the_optimizer_replies_section_with_reasons(tmp_path):
    run_dir = make_run(tmp_path / "run")
    events = [
        {
            "event": "reply_truncated",
            "phase": "edit",
            "round": 1,
            "purpose": "edit",
            "reason": "max_tokens reached",
            "reply": "<START>Answer Yes if Answer Yes if",
        },
        {
            "event": "reply_cut_repetition",
            "phase": "edit",
            "round": 1,
            "purpose": "edit",
            "reason": "a sentence repeated 3 times",
            "reply": "<START>Check the facts. Check the facts.",
        },
        {
            "event": "candidate_rejected",
            "phase": "edit",
            "round": 1,
            "reason": "chat filler",
            "rule": "chat filler",
            "text": "Please continue with your next prompt.",
        },
    ]
    with (run_dir / "trace.jsonl").open("a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in events))
    res = json.loads((run_dir / "results.json").read_text())
    res["replies"] = {
        "guided": True,
        "replies": 4,
        "guided_replies": 4,
        "truncated": 1,
        "used_whole": 0,
        "proposals": 2,
        "accepted": 1,
        "accepted_share": 0.5,
        "rejected": {"chat filler": 1},
    }
    (run_dir / "results.json").write_text(json.dumps(res))
    rows = {(r["event"], r["where"]): r for r in D.reply_outcomes(D.load_run(run_dir))}
    assert rows[("reply_truncated", "edit")]["reason"] == "max_tokens reached"
    assert rows[("reply_cut_repetition", "edit")]["reason"] == "a sentence repeated 3 times"
    assert rows[("candidate_rejected", "chat filler")]["example"] == "Please continue with your next prompt."
    html = write_report(run_dir).read_text()
    assert "Optimizer replies and rejected candidates" in html and "accepted=1 (50%)" in html
    assert "a sentence repeated 3 times" in html
    assert "max_tokens reached" in html and "Please continue with your next prompt." in html


def test_a_compare_directory_gets_one_report_per_run(tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.yaml").write_text("methods: {}\n")
    with pytest.raises(ApoError, match="compare directory without finished runs"):
        write_report(out)
    runs = [make_run(out / m / f"seed-{s}") for m in ("protegi", "pareto") for s in (0, 1)]
    pages = write_report(out)
    assert sorted(pages) == sorted(r / "report.html" for r in runs) and all(p.is_file() for p in pages)
    assert "apo-local run: pareto/seed-1" in (out / "pareto" / "seed-1" / "report.html").read_text()
