"""The openai backend against a real local vLLM OpenAI-compatible server (embedded model, real Liar rows).

The session's one server (tests/conftest.py ``vllm_server``: vLLM's own entry point on a free loopback port, the
same weights and dtype as the in-process engine), shared with tests/engine/test_http_engine.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from apo_local.engine import EngineSettings, GenerationRequest, load_engine
from apo_local.engine.openai_engine import OpenAIEngine
from tests.conftest import SERVED

pytestmark = [pytest.mark.engine, pytest.mark.slow]  # starts a server process


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
    from apo_local.commands.cli import cli

    out = tmp_path / "run"
    flags = [
        "optimize",
        "--task",
        "liar",
        "--preset",
        "smoke",
        "--target-backend",
        "openai",
        "--target-base-url",
        server,
        "--target-workers",
        "4",
        "--train-limit",
        "40",
        "--test-limit",
        "8",
        "--beam-size",
        "1",
        "--max-expansion",
        "1",
        "--budget",
        "8",
        "--optimizer-max-tokens",
        "32",
        "--cache",
        str(tmp_path / "cache.sqlite"),
    ]
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


KEY = "sk-apotest-served-key-7c41d09e2b"


def test_a_server_dying_mid_run_then_resume(vllm_server, tmp_path):
    """``apo-local optimize`` (a subprocess, as a user runs it) against the server behind a relay (tests/helpers/tcp_relay.py),
    with APO_LOCAL_OPENAI_API_KEY set: the server dies once round 1's candidates are checkpointed (its connections
    reset, its port refusing); the run stops with one ``error:`` line, no traceback, its checkpoint kept; the server
    comes back on the same address and ``--resume`` finishes from that checkpoint (the optimizer is not asked
    again). Every request carried the key; no file the run or its caches wrote holds it."""
    import os
    import subprocess
    import sys
    import time

    import yaml

    from tests.conftest import CLI_RUN
    from tests.helpers.tcp_relay import Relay

    upstream = ("127.0.0.1", int(vllm_server.base_url.rsplit(":", 1)[1]))
    relay = Relay(upstream, needle=f"authorization: bearer {KEY}".encode())
    url = f"http://127.0.0.1:{relay.port}/v1"
    config = {**CLI_RUN, "cache": str(tmp_path / "cache.sqlite"), "target": {"backend": "openai", "base_url": url}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    env = {**os.environ, "APO_LOCAL_OPENAI_API_KEY": KEY, "APO_LOCAL_CACHE_DIR": str(tmp_path / "user-cache")}
    cli = [sys.executable, "-m", "apo_local.commands.cli"]
    root = Path(__file__).resolve().parents[2]

    def phase():
        try:
            c = json.loads((run / "checkpoint.json").read_text())  # written atomically
        except FileNotFoundError:
            return None
        return c["round"], c["phase"]

    def optimizer_calls() -> int:
        lines = (run / "trace.jsonl").read_text().splitlines()
        return sum(1 for line in lines if line.strip() and json.loads(line).get("role") == "optimizer")

    (tmp_path / "terminal").mkdir()
    with open(tmp_path / "terminal" / "out", "w") as out, open(tmp_path / "terminal" / "err", "w") as err:
        proc = subprocess.Popen(
            [*cli, "optimize", "--config", str(tmp_path / "run.yaml"), "--out", str(run)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
    deadline = time.monotonic() + 600
    while phase() != (1, "expanded") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    relay.kill()
    proc.wait(timeout=300)
    err = (tmp_path / "terminal" / "err").read_text()
    assert phase() == (1, "expanded"), ("never reached the kill point", err[-2000:])
    assert proc.returncode == 2 and not (run / "results.json").exists(), err[-2000:]  # ApoError's code
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unreachable (4 tries)" in errors[0] and "Traceback" not in err, err[-2000:]
    asked = optimizer_calls()
    assert asked > 0

    relay = Relay(upstream, port=relay.port, needle=f"authorization: bearer {KEY}".encode())  # the server is back
    try:
        done = subprocess.run(
            [*cli, "optimize", "--resume", str(run)], cwd=root, env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        relay.kill()
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["stop_reason"] == "completed" and results["rounds_completed"] == 1
    assert (run / "predictions" / "test-best.jsonl").is_file() and phase() == (1, "done")
    assert optimizer_calls() == asked  # resumed from the checkpoint: round 1's candidates were not asked for again
    assert relay.carrying > 0

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [str(p) for p in files if KEY.encode() in p.read_bytes()] == []
    assert KEY not in done.stdout + done.stderr  # the first run's output: in tmp_path/terminal, read above
