"""The Qwen2.5-Coder 0.5B and 1.5B Instruct models on the real engine, each once as the target (``apo-local
evaluate`` of 8 Liar rows: label scores) and once as the optimizer (one guided reply that parses). They are
prepared by set-up (the 0.5B always: the demo's optimizer; the 1.5B only where asked, ``APO_LOCAL_EXTRA_MODELS``,
models/README.md): a model that is not prepared is skipped, with the command that prepares it."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from apo_local.models.registry import load_registry, model_folder_problem

pytestmark = [pytest.mark.engine, pytest.mark.slow]
QWEN = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


@pytest.fixture(scope="module", params=QWEN)
def qwen(request):
    """A prepared Qwen model's alias, its engine started once for the module's tests of it (skipped, with the
    command that prepares it, where it is not prepared)."""
    from apo_local.engine import EngineSettings, engine_key, load_engine, shutdown_engines

    alias = request.param
    problem = model_folder_problem(load_registry().entry(alias).path)
    if problem:
        pytest.skip(f"{alias} is not prepared ({problem}); run: APO_LOCAL_EXTRA_MODELS={alias} bash scripts/setup.sh")
    settings = EngineSettings(model=alias)
    load_engine(settings, False)
    yield alias
    shutdown_engines(keys={engine_key(settings)})


def test_as_target_label_scores(qwen, tmp_path):
    from apo_local.commands.cli import cli

    preds = tmp_path / "preds.jsonl"
    res = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--task",
            "liar",
            "--limit",
            "8",
            "--model",
            qwen,
            "--calibration",
            "batch",
            "--cache",
            str(tmp_path / "cache.sqlite"),
            "--json",
            "--out",
            str(preds),
        ],
    )
    assert res.exit_code == 0, (res.output[-2000:], res.exception)
    report = json.loads(res.stdout[res.stdout.index("{") :])
    assert report["n"] == 8 and report["engine_errors"] == 0 and sum(report["predicted_distribution"].values()) == 8
    records = [json.loads(line) for line in preds.read_text().splitlines()]
    for r in records:
        probs = [math.exp(v) for v in r["logprobs"].values()]
        assert all(0 < p < 1 for p in probs) and sum(probs) <= 1 + 1e-4
    assert len({round(r["logprobs"]["Yes"], 3) for r in records}) > 1  # the scores depend on the row


def test_as_optimizer_one_guided_reply_parses(qwen):
    from apo_local.engine import EngineSettings, RoleEngine, Trace, load_engine
    from apo_local.run.config import build_config
    from apo_local.search.meta_prompts import MetaPrompts
    from apo_local.search.optimizer_calls import OptimizerCalls
    from apo_local.search.reply_shapes import tagged
    from apo_local.search.streams import Streams

    engine = load_engine(EngineSettings(model=qwen), False)  # the module's engine
    cfg = build_config({"optimizer": {"max_tokens": 96}})
    trace = Trace()
    calls = OptimizerCalls(RoleEngine(engine, "optimizer", trace), cfg.optimizer, "whole", Streams(0, 1))
    prompt = "Determine whether the Statement is a lie (Yes) or not (No) based on the Context."
    replies = calls.ask(
        "rewrite", [MetaPrompts().render("rewrite", prompt=prompt)], n=1, shape=tagged(1, max_tokens=96)
    )
    items = calls.sample_items(replies[0], "rewrite")
    assert trace.counts["replies_guided"] == 1 and trace.counts.get("replies_truncated", 0) == 0, trace.counts
    assert len(items) == 1 and len(items[0].split()) >= 3, replies[0].texts
