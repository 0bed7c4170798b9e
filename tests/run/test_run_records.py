"""A run records which model it used (config.yaml's header, engines.json, results.json, the report header, the
throughput record's key) and warns when its validation split cannot tell prompts apart. The search runs on the
stand-in engine of tests/search/test_search_logic_equivalence.py: these are records, not model behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import apo_local.run.optimize as O
from apo_local.models.registry import model_record, resolve_model, weights_fingerprint
from apo_local.run.config import build_config
from apo_local.search.splits import validation_warning
from tests.helpers.stand_in import StandIn, use_stand_in

SMALL = {"task": "liar", "cache": "off", "evaluation": {"attribution": False}}


@pytest.fixture
def stand_in(monkeypatch):
    engine = use_stand_in(monkeypatch)
    return engine


@pytest.fixture(scope="module")
def default_model() -> dict:
    folder = resolve_model(None)
    return {"alias": "smollm2-135m", "folder": str(folder), "fingerprint": weights_fingerprint(folder)}


def test_a_run_records_the_resolved_model_in_results_config_and_report(stand_in, tmp_path, default_model):
    from apo_local.report import write_report

    run = tmp_path / "run"
    O.optimize(build_config(SMALL, preset="smoke"), run)  # target.model: null, the registry default
    results = json.loads((run / "results.json").read_text())
    target = results["models"]["target"]
    assert target["name"] is None and {k: target[k] for k in default_model} == default_model
    assert results["models"]["optimizer"] == target
    header = (run / "config.yaml").read_text().splitlines()[:2]
    assert header[0] == (
        f"# target model: smollm2-135m (the registry default), folder {default_model['folder']}, "
        f"weights {default_model['fingerprint']}"
    )
    assert header[1] == "# optimizer model: the target's"
    page = Path(write_report(run)).read_text()
    assert f"target smollm2-135m ({default_model['fingerprint']})" in page and "optimizer = target" in page


def test_the_engine_plan_records_the_models(monkeypatch, tmp_path, default_model):
    import apo_local.engine as E
    from apo_local.engine.settings import EngineSettings

    monkeypatch.setattr(E, "load_engine", lambda *a, **k: StandIn())
    *_, plan = E.load_role_engines(EngineSettings(), EngineSettings(model=default_model["folder"]), False)
    models = plan["models"]
    assert models["target"]["alias"] == models["optimizer"]["alias"] == "smollm2-135m"
    assert models["optimizer"]["name"] == default_model["folder"]
    assert models["target"]["fingerprint"] == models["optimizer"]["fingerprint"] == default_model["fingerprint"]


def test_throughput_is_keyed_by_the_resolved_model_not_its_spelling(default_model):
    from apo_local.run.estimate import throughput_key

    keys = {
        throughput_key(build_config({"target": {"model": m}})) for m in (None, "smollm2-135m", default_model["folder"])
    }
    assert len(keys) == 1
    key = json.loads(keys.pop())
    assert key[0][0] == default_model["fingerprint"] and "null" not in json.dumps(key[0][:1])


def test_the_weights_fingerprint_follows_the_weights(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    weights = bytearray(range(256)) * (3 << 12)  # 3 MiB
    (folder / "model.safetensors").write_bytes(weights)
    first = weights_fingerprint(folder)
    assert weights_fingerprint(folder) == first  # stable
    weights[len(weights) // 2] ^= 1  # one byte in the middle sample
    (folder / "model.safetensors").write_bytes(weights)
    assert weights_fingerprint(folder) != first
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    assert len({first, weights_fingerprint(folder)}) == 2


def test_a_folder_outside_the_registry_has_no_alias(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (folder / name).write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    rec = model_record(str(folder))
    assert rec["alias"] is None and rec["folder"] == str(folder.resolve()) and rec["fingerprint"].startswith("sha256:")


def test_too_few_validation_rows_are_warned_of_in_the_log_the_results_and_the_table(stand_in, tmp_path, caplog):
    from apo_local.commands.summary import summary_lines

    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="apo_local"):
        result = O.optimize(build_config(SMALL, preset="smoke"), run)  # smoke: 16 validation rows
    line = validation_warning(16)
    assert line and "16 validation rows" in line and "about 37 rows" in line and "0.10 about 155" in line
    assert [r.getMessage() for r in caplog.records].count(line) == 1
    assert json.loads((run / "results.json").read_text())["warnings"] == [line]
    assert summary_lines(result)[-1] == line


def test_enough_validation_rows_no_warning(stand_in, tmp_path):
    result = O.optimize(
        build_config({**SMALL, "evaluation": {"attribution": False, "validation_rows": 40}}, preset="smoke"),
        tmp_path / "run",
    )
    assert result.warnings == [] and "warnings" not in json.loads((tmp_path / "run" / "results.json").read_text())


def test_the_warning_threshold_is_the_power_formula():
    from apo_local.stats import examples_needed

    need = examples_needed(0.2, 0.2)
    assert validation_warning(need) is None and validation_warning(need - 1) is not None
    assert validation_warning(0) is None  # no validation rows: nothing is picked on them
