"""Sweep grid, cell naming, engine grouping, resumption bookkeeping and results tables (no engine).

Cells here are run directories written by hand (tests/report/test_report.py's ``make_run``); the real
engine runs the sweep in test_sweep_e2e.py and test_sweep_ray.py.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from apo_local.experiments import sweep as S
from apo_local.experiments.sweep import local as local_runner
from apo_local.experiments.sweep.manifest import write_manifest
from apo_local.support.errors import ApoError
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


def spec_of(data: dict):
    return S.parse_sweep(data, origin="test.yaml", root=ROOT / "configs")


def test_grid_methods_and_names():
    spec, base = spec_of(
        {
            "base": TINY,
            "grid": {"seed": [0, 1], "optimizer.model": [None, "smollm2-135m"]},
            "methods": {"ucb": {}, "sh": {"selection": {"selector": "successive-halving"}}},
        }
    )
    cells = S.expand(spec, base)
    assert len(cells) == 8 and len({c.id for c in cells}) == 8
    sh = [c for c in cells if c.method == "sh"]
    assert all(c.config.selection.selector == "successive-halving" for c in sh)
    assert all(c.config.search.rounds == TINY["search"]["rounds"] for c in cells)  # base kept
    c = next(c for c in sh if c.config.seed == 1 and c.config.optimizer.model is None)
    assert c.id.startswith("sh__s1__null-") and c.labels["optimizer"] == "= target"
    assert c.labels["method"] == "sh" and c.labels["selector"] == "successive-halving"
    # the id hashes the resolved config: same grid, same ids; a changed base, new ids
    assert [x.id for x in S.expand(*spec_of({"base": TINY, "grid": spec.grid, "methods": spec.methods}))] == [
        x.id for x in cells
    ]
    other = S.expand(
        *spec_of({"base": {**TINY, "seed": 0, "train_limit": 100}, "grid": spec.grid, "methods": spec.methods})
    )
    assert not {x.id for x in other} & {x.id for x in cells}


def test_cells_that_share_engines_are_adjacent():
    spec, base = spec_of(
        {
            "base": TINY,
            "grid": {
                "seed": [0, 1],
                "optimizer.model": ["smollm2-135m", None],
                "selection.selector": ["ucb", "uniform"],
            },
        }
    )
    order = [(c.config.optimizer.model, c.config.seed) for c in S.order_for_engines(S.expand(spec, base))]
    assert order == [("smollm2-135m", 0)] * 2 + [("smollm2-135m", 1)] * 2 + [(None, 0)] * 2 + [(None, 1)] * 2


def test_alias_and_folder_get_distinct_labels():
    spec, base = spec_of(
        {"base": {"task": "liar"}, "grid": {"optimizer.model": ["smollm2-135m", "models/smollm2-135m"]}}
    )
    labels = {c.labels["optimizer"] for c in S.expand(spec, base)}
    assert labels == {"smollm2-135m", "models/smollm2-135m"}


def test_the_optimizer_size_sweep_compares_two_real_models_as_optimizer_and_target():
    spec, base = S.load_sweep(ROOT / "configs" / "sweep-optimizer-size.yaml")
    cells = S.expand(spec, base)
    pairs = {(c.labels["task"], c.labels["target"], c.labels["optimizer"]) for c in cells}
    models = {"smollm2-135m", "gemma3-270m"}
    assert pairs == {(t, a, b) for t in ("liar", "liar-party") for a in models for b in models}
    assert {c.config.seed for c in cells} == {0, 1, 2}


def test_the_four_optimizer_sweep_pairs_every_optimizer_with_both_targets_and_calibrates_only_the_qwen_target():
    spec, base = S.load_sweep(ROOT / "configs" / "sweep-four-optimizers.yaml")
    cells = S.expand(spec, base)
    optimizers = {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    targets = {"smollm2-135m", "qwen2.5-coder-1.5b"}
    seen = {(c.config.task, c.config.target.model, c.config.optimizer.model, c.config.seed) for c in cells}
    assert seen == {(t, a, o, s) for t in ("liar", "ethos") for a in targets for o in optimizers for s in (0, 1, 2)}
    calibration = {c.config.target.model: set() for c in cells}
    for c in cells:
        calibration[c.config.target.model].add(c.config.scoring.calibration)
    assert calibration == {"smollm2-135m": {"none"}, "qwen2.5-coder-1.5b": {"batch"}}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"grid": {"seed": []}}, "grid.seed: empty list"),
        ({"grid": {"search.roundz": [1]}}, r"test.yaml \(cell search.roundz=1\): search.roundz: unknown key"),
        ({"grid": {"seed": [0]}, "methods": {"m": {"seed": 1}}}, "methods.m and grid both set seed"),
        ({"grd": {}}, "grd: unknown key"),
        ({"base": "missing.yaml"}, "base: run config missing.yaml does not exist"),
        ({"ray": {"num_gpus_per_cell": "many"}}, "num_gpus_per_cell"),
    ],
)
def test_bad_sweep_configs_name_the_key(data, message):
    with pytest.raises(ApoError, match=message):
        S.expand(*spec_of(data), origin="test.yaml")


def test_example_configs_expand():
    for name, n in (("sweep-example.yaml", 4), ("sweep-optimizer-size.yaml", 24), ("sweep-four-optimizers.yaml", 48)):
        spec, base = S.load_sweep(ROOT / "configs" / name)
        assert len(S.expand(spec, base)) == n


# -- tables from cells on disk --------------------------------------------------------------------


def _fake_sweep(tmp_path: Path, spec_data: dict, f1: dict) -> Path:
    """Write the manifest of a sweep and, for every cell, a finished run directory."""
    from tests.report.test_report import make_run

    spec, base = spec_of(spec_data)
    cells = S.order_for_engines(S.expand(spec, base))
    out = tmp_path / "sweep"
    out.mkdir()
    for c in cells:
        d = make_run(out / c.id)
        (d / "config.yaml").write_text(c.config_text)
        res = json.loads((d / "results.json").read_text())
        res["best_test"]["metrics"]["f1"] = f1[(c.labels["optimizer"], c.config.seed)]
        res["usage"]["optimizer"]["input_tokens"] += 1000 * c.config.seed
        (d / "results.json").write_text(json.dumps(res))
    write_manifest(out, cells, {c.id: "ran" for c in cells})
    return out


OPT_SIZE = {"base": TINY, "grid": {"optimizer.model": ["smollm2-135m", "models/smollm2-135m"], "seed": [0, 1]}}
F1 = {
    ("smollm2-135m", 0): 0.5,
    ("smollm2-135m", 1): 0.7,
    ("models/smollm2-135m", 0): 0.6,
    ("models/smollm2-135m", 1): 0.6,
}


def test_results_tables_and_optimizer_size_view(tmp_path):
    pytest.importorskip("matplotlib")
    out = _fake_sweep(tmp_path, OPT_SIZE, F1)
    S.write_tables(out)
    rows = list(csv.DictReader((out / "results.csv").open()))
    cells = [r for r in rows if r["kind"] == "cell"]
    assert len(cells) == 4 and {r["status"] for r in cells} == {"done"}
    assert {r["optimizer"] for r in cells} == {"smollm2-135m", "models/smollm2-135m"}
    c0 = next(r for r in cells if r["optimizer"] == "smollm2-135m" and r["seed"] == "0")
    assert float(c0["test_best"]) == 0.5 and float(c0["test_initial"]) == 0.45
    assert int(c0["optimizer_tokens"]) == 1100 + 270 and int(c0["target_prompts"]) == 116
    assert float(c0["wall_seconds"]) == 20.5
    mean = next(r for r in rows if r["kind"] == "mean" and r["optimizer"] == "smollm2-135m")
    std = next(r for r in rows if r["kind"] == "std" and r["optimizer"] == "smollm2-135m")
    assert mean["n"] == "2" and float(mean["test_best"]) == pytest.approx(0.6)
    assert float(std["test_best"]) == pytest.approx(0.1414, abs=1e-3)
    assert float(mean["optimizer_tokens"]) == pytest.approx(1370 + 500)

    md = (out / "results.md").read_text()
    assert "## Cells" in md and "## Mean ± std over seeds" in md and "0.600 ± 0.141" in md
    assert "## Optimizer size" in md and "135M" in md and "![optimizer size](optimizer-size.png)" in md
    size = list(csv.DictReader((out / "optimizer-size.csv").open()))
    assert {r["optimizer"] for r in size} == {"smollm2-135m", "models/smollm2-135m"}
    assert all(130e6 < int(r["parameters"]) < 140e6 for r in size)  # read from the safetensors headers
    assert (out / "optimizer-size.png").stat().st_size > 10_000


def test_optimizer_size_csv_keeps_the_paired_columns_of_later_rows(tmp_path, monkeypatch):
    """A series' first (smallest) optimizer is the reference and has no paired columns; the larger ones do."""
    import apo_local.experiments.sweep.size_view as V

    rows = [
        {"series": "liar / smollm2-135m", "optimizer": "smollm2-135m", "test_selected": 0.40},
        {
            "series": "liar / smollm2-135m",
            "optimizer": "gemma3-270m",
            "test_selected": 0.45,
            "diff": 0.05,
            "diff_ci": [-0.01, 0.11],
            "mcnemar_p": 0.5,
        },
    ]
    monkeypatch.setattr(V, "optimizer_size_rows", lambda *a: [dict(r) for r in rows])
    monkeypatch.setattr(V, "_markdown", lambda size_rows: ["## Optimizer size"])
    monkeypatch.setattr(V, "optimizer_size_plot", lambda size_rows: b"png")
    assert V.write_size_view(tmp_path, [], [])[0] == "## Optimizer size"
    got = list(csv.DictReader((tmp_path / "optimizer-size.csv").open()))
    assert [r["optimizer"] for r in got] == ["smollm2-135m", "gemma3-270m"]
    assert got[0]["diff"] == "" and got[1]["diff"] == "0.05" and got[1]["mcnemar_p"] == "0.5"


def test_no_optimizer_view_without_optimizer_axis(tmp_path):
    out = _fake_sweep(tmp_path, {"base": TINY, "grid": {"seed": [0, 1]}}, {("= target", 0): 0.5, ("= target", 1): 0.6})
    S.write_tables(out)
    assert not (out / "optimizer-size.csv").exists() and "Optimizer size" not in (out / "results.md").read_text()


def test_finished_cells_are_skipped_and_missing_ones_listed(tmp_path, monkeypatch):
    out = _fake_sweep(tmp_path, OPT_SIZE, F1)
    victim = sorted(p for p in out.iterdir() if p.is_dir())[0]
    shutil.rmtree(victim)
    calls = []
    monkeypatch.setattr(local_runner, "run_cell", lambda d, text, **kw: calls.append(Path(d).name) or "ran")
    spec, base = spec_of(OPT_SIZE)
    result = S.run_sweep(spec, base, out)
    assert calls == [victim.name]  # only the missing cell ran
    assert result.status[victim.name] == "ran" and sum(s == "done" for s in result.status.values()) == 3
    saved = yaml.safe_load((out / "sweep.yaml").read_text())
    assert saved["grid"] == OPT_SIZE["grid"] and saved["base"]["search"] == TINY["search"]


def test_cell_with_another_config_is_refused(tmp_path):
    spec, base = spec_of(OPT_SIZE)
    cell = S.expand(spec, base)[0]
    d = tmp_path / cell.id
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({**yaml.safe_load(cell.config_text), "seed": 7}))
    with pytest.raises(ApoError, match="different config"):
        S.run_cell(d, cell.config_text)


def test_sweep_report_page(tmp_path):
    pytest.importorskip("matplotlib")
    from apo_local.report import write_report

    out = _fake_sweep(tmp_path, OPT_SIZE, F1)
    page = write_report(out, cells=True).read_text()
    assert "Optimizer size" in page and page.count('<img class="plot"') == 2
    assert all((d / "report.html").is_file() for d in out.iterdir() if d.is_dir() and d.name != "plots")
    assert '/report.html">' in page  # cells link to their own reports


def test_sweep_report_renders_in_chromium(tmp_path):
    from tests.report.test_report import assert_renders, require_chromium

    require_chromium()
    from apo_local.report import write_report

    out = _fake_sweep(tmp_path, OPT_SIZE, F1)
    assert_renders(write_report(out), tmp_path, min_plots=2)


def test_cli_dry_run_and_report(tmp_path):
    from click.testing import CliRunner

    from apo_local.commands.cli import cli

    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "sweep",
            "--config",
            str(ROOT / "configs" / "sweep-example.yaml"),
            "--out",
            str(tmp_path / "dry"),
            "--dry-run",
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.count("pending") == 4 and "4 cells" in res.output and not (tmp_path / "dry").exists()
    pytest.importorskip("matplotlib")
    out = _fake_sweep(tmp_path, OPT_SIZE, F1)
    res = runner.invoke(cli, ["report", str(out), "--no-cells"])
    assert res.exit_code == 0, res.output
    assert (
        res.output.strip() == str(out / "report.html")
        and not (out / next(d.name for d in out.iterdir() if d.is_dir() and d.name != "plots") / "report.html").exists()
    )


def test_a_failing_cell_does_not_stop_the_sweep(tmp_path, monkeypatch):
    spec, base = spec_of({"base": TINY, "grid": {"seed": [0, 1]}})

    def run_cell(d, text, **kw):
        if yaml.safe_load(text)["seed"] == 0:
            raise RuntimeError("engine died\nmore")
        return "ran"

    monkeypatch.setattr(local_runner, "run_cell", run_cell)
    result = S.run_sweep(spec, base, tmp_path / "sweep")
    assert sorted(result.status.values()) == ["failed: RuntimeError: engine died", "ran"]
    assert len(result.failed) == 1
    manifest = {c["labels"]["seed"]: c["status"] for c in S.load_manifest(tmp_path / "sweep")}
    assert manifest[0].startswith("failed") and manifest[1] == "ran"


def test_cli_sweep_with_report(tmp_path, monkeypatch):
    """``sweep --report`` runs the ``report`` command of the CLI at the end (sweep/ never imports report/)."""
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    from apo_local.commands.cli import cli
    from tests.report.test_report import make_run

    def finished_run(d, text, **kw):
        (make_run(Path(d)) / "config.yaml").write_text(text)
        return "ran"

    monkeypatch.setattr(local_runner, "run_cell", finished_run)
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump({"base": TINY, "grid": {"seed": [0, 1]}}))
    out = tmp_path / "sweep"
    res = CliRunner().invoke(cli, ["sweep", "--config", str(spec_file), "--out", str(out), "--report"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "2 cells: ran=2" and lines[-1] == f"report: {out / 'report.html'}"
    assert (out / "report.html").is_file() and len(list(out.glob("*/report.html"))) == 2


def test_cell_archive_round_trip(tmp_path):
    """A finished cell shipped back from a Ray worker as an archive arrives whole, without its lock."""
    from apo_local.experiments.sweep.packing import pack, unpack
    from tests.report.test_report import make_run

    src = make_run(tmp_path / "worker" / "cell")
    (src / ".lock").write_text("")
    unpack(pack(src), tmp_path / "driver" / "cell")
    files = lambda d: {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}  # noqa: E731
    got, want = files(tmp_path / "driver" / "cell"), files(src)
    assert ".lock" not in got and got == {k: v for k, v in want.items() if k != ".lock"}
    assert "rounds/round-02.json" in got


def test_a_cells_wall_seconds_are_its_whole_run_not_only_the_search(tmp_path):
    from apo_local.experiments.sweep.tables import _result_values
    from tests.report.test_report import make_run

    res = json.loads((make_run(tmp_path / "run") / "results.json").read_text())
    assert _result_values(res)["wall_seconds"] == res["time"]["seconds"]  # a run from before "total" was kept
    res["time"].update(total=31.7, search=5.5, final_test=24.4)
    assert _result_values(res)["wall_seconds"] == 31.7


def test_optimizer_size_intervals_and_paired_differences_come_from_the_cells_predictions(tmp_path):
    """With predictions on disk (f1, an aggregate metric), each optimizer row gets the interval of its selected
    prompt's test f1 and, against the smallest optimizer, the paired difference with McNemar per seed."""
    pytest.importorskip("matplotlib")
    out = _fake_sweep(tmp_path, OPT_SIZE, F1)
    golds = ["Yes", "No"] * 20
    answers = {"smollm2-135m": ["Yes"] * 40, "models/smollm2-135m": golds[:30] + ["No"] * 10}
    for cell in (p for p in out.iterdir() if (p / "config.yaml").is_file()):
        opt = yaml.safe_load((cell / "config.yaml").read_text())["optimizer"]["model"]
        (cell / "predictions").mkdir(exist_ok=True)
        (cell / "predictions" / "test-best.jsonl").write_text(
            "".join(
                json.dumps({"id": f"test-{i}", "parsed": a, "gold": g}) + "\n"
                for i, (a, g) in enumerate(zip(answers[opt], golds))
            )
        )
    S.write_tables(out)
    size = {r["optimizer"]: r for r in csv.DictReader((out / "optimizer-size.csv").open())}
    lo, hi = json.loads(size["smollm2-135m"]["test_ci"])
    assert lo <= 2 / 3 <= hi and hi - lo > 0  # always Yes on half-Yes rows: f1 2/3 on each seed; rows resampled
    (other,) = [r for r in size.values() if r["vs_optimizer"]]  # the series' first row is its reference
    assert other["paired_seeds"] == "2" and other["paired_rows"] == "40"
    assert len(json.loads(other["mcnemar_p_per_seed"])) == 2
    better = 30 / 35 - 2 / 3  # the other optimizer's prompts: f1 30/35 on each seed
    assert float(other["diff"]) == pytest.approx(better if other["optimizer"] != "smollm2-135m" else -better)
    # the same difference on both seeds: the t test over seeds is certain, and the verdict follows the interval
    assert float(other["diff_p"]) == 0.0
    lo, hi = json.loads(other["diff_ci"])
    assert other["verdict"] == ("better" if lo > 0 else "worse" if hi < 0 else "no detectable change")
