"""The openai backend against a real local vLLM OpenAI-compatible server (embedded model, real Liar rows).

The session's one server (tests/conftest.py ``vllm_server``: vLLM's own entry point on a free loopback port, the
same weights and dtype as the in-process engine), shared with tests/test_http_engine.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from apo_local.engine import EngineSettings, GenerationRequest, load_engine
from apo_local.engine.openai_engine import OpenAIEngine

pytestmark = [pytest.mark.engine, pytest.mark.slow]  # starts a server process

from tests.conftest import SERVED


@pytest.fixture(scope="module")
def server(vllm_server):
    return vllm_server.url


def test_label_scores_match_the_in_process_engine(server, engine, liar, tmp_path):
    """label-ids (vLLM's logprob_token_ids) and echo give the in-process engine's label log-probs."""
    rows = liar.split("test")[:4]
    prompts = [liar.render(liar.initial_instruction, ex) for ex in rows]
    want = engine.score_choices(prompts, liar.labels)
    remote = load_engine(EngineSettings(backend="openai", base_url=server), tmp_path / "c.sqlite")
    assert isinstance(remote.inner, OpenAIEngine) and remote.inner.scoring == "label-ids"
    assert remote.inner.model == SERVED and remote.max_model_len == 2048
    got = remote.score_choices(prompts, liar.labels)
    for g, w in zip(got, want):
        assert g.error is None and g.input_tokens == w.input_tokens
        assert g.logprobs == pytest.approx(w.logprobs, abs=0.05)
    assert remote.count_tokens(prompts) == engine.count_tokens(prompts)
    echo = OpenAIEngine(EngineSettings(backend="openai", base_url=server, server_scoring="echo"))
    for e, w in zip(echo.score_choices(prompts[:2], liar.labels), want):
        assert e.logprobs == pytest.approx(w.logprobs, abs=0.05)
    # multi-token labels, one a prefix of another: scored up to the end-of-turn token, as in process
    labels = ["True statement", "False claim", "False"]
    many = remote.score_choices(prompts[:1], labels)[0].logprobs
    assert many == pytest.approx(engine.score_choices(prompts[:1], labels)[0].logprobs, abs=0.05)
    hits = remote.hits
    assert remote.score_choices(prompts, liar.labels) == got and remote.hits == hits + 4  # the result cache
    echo.close()


def test_generate_and_parse_and_top_logprobs(server, liar):
    prompts = [liar.render(liar.initial_instruction, ex) for ex in liar.split("test")[:3]]
    gen = OpenAIEngine(EngineSettings(backend="openai", base_url=server, server_scoring="generate", workers=2))
    out = gen.generate([GenerationRequest("Name a colour.", max_tokens=8, seed=1, n=2, temperature=0.8)])[0]
    assert len(out.texts) == 2 and out.output_tokens > 0 and out.input_tokens > 0
    assert gen.generate([GenerationRequest("x " * 3000, max_tokens=4)])[0].error.startswith("prompt too long")
    for s in gen.score_choices(prompts, liar.labels):  # one-hot on the parsed label, or a counted error
        assert (s.error is not None) or sorted(s.logprobs) == [-math.inf, 0.0]
    top = OpenAIEngine(EngineSettings(backend="openai", base_url=server, server_scoring="top-logprobs"))
    for s in top.score_choices(prompts, liar.labels):
        assert s.error is None and all(lp < 0 and math.isfinite(lp) for lp in s.logprobs)
    gen.close(), top.close()


def test_optimize_through_the_server(server, tmp_path):
    """A tiny run with --target-backend openai: the trace records the server's calls; a rerun is all cache."""
    from apo_local.cli import cli

    out = tmp_path / "run"
    flags = ["optimize", "--task", "liar", "--preset", "smoke", "--target-backend", "openai",
             "--target-base-url", server, "--target-workers", "4", "--train-limit", "40", "--test-limit", "8",
             "--beam-size", "1", "--max-expansion", "1", "--budget", "8", "--optimizer-max-tokens", "32",
             "--cache", str(tmp_path / "cache.sqlite")]
    res = CliRunner().invoke(cli, flags + ["--out", str(out)])
    assert res.exit_code == 0, res.output
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    calls = [t for t in trace if t.get("op")]
    assert {t["role"] for t in calls} == {"target", "optimizer"}
    assert sum(t["prompts"] for t in calls if t["op"] == "score_choices") >= 8
    results = json.loads((out / "results.json").read_text())
    again = CliRunner().invoke(cli, flags + ["--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again" / "results.json").read_text())["best_prompt"] == results["best_prompt"]
    rerun = [json.loads(line) for line in (tmp_path / "again" / "trace.jsonl").read_text().splitlines()]
    assert all(t["cache_hits"] == t["prompts"] for t in rerun if t.get("op"))
    assert Path(out / "predictions" / "test-best.jsonl").is_file()
