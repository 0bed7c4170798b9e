"""What the openai backend promises about the wire (docs/server-engine.md), against a fake server on 127.0.0.1
(tests/helpers/fake_server.py): transient failures (429, 5xx, a dropped connection) are retried three times with growing
waits, then one line; a refused request (400) fails alone, unretried; the API key goes to the server as the bearer
token and into no file a run writes."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

import apo_local.engine.openai_client as oc
from apo_local.commands.cli import cli
from apo_local.engine import EngineSettings, GenerationRequest
from apo_local.engine.openai_engine import OpenAIEngine
from apo_local.support.errors import ApoError
from tests.conftest import CLI_RUN
from tests.helpers.fake_server import SERVED, FakeServer

WAIT = 0.05  # the first retry's wait in these tests (the product's: 0.5 s)


@pytest.fixture
def short_waits(monkeypatch):
    monkeypatch.setattr(oc, "BACKOFF_S", WAIT)


@pytest.fixture
def server():
    with FakeServer() as fake:
        yield fake


def test_the_product_waits_half_a_second_then_doubles():
    assert (oc.RETRIES, oc.BACKOFF_S) == (3, 0.5) and oc.RETRY_STATUS == {429, 500, 502, 503, 504}


def test_429_then_503_then_200_is_retried_with_doubling_waits(server, short_waits):
    server.script["/v1/models"] = [429, 503]
    client = oc.ServerClient(server.url, None)
    try:
        assert client.model_card(None)["id"] == SERVED
    finally:
        client.close()
    seen = server.requests_to("/v1/models")
    assert len(seen) == 3
    gaps = [b.at - a.at for a, b in zip(seen, seen[1:])]
    assert gaps[0] >= WAIT and gaps[1] >= 2 * WAIT, gaps


def test_a_dropped_connection_is_retried(server, short_waits):
    server.script["/v1/models"] = ["drop", 502]
    client = oc.ServerClient(server.url, None)
    try:
        assert client.model_card(None)["id"] == SERVED
    finally:
        client.close()
    assert len(server.requests_to("/v1/models")) == 3


def _engine(server) -> OpenAIEngine:
    # top-logprobs named: no probe at start, so the script below meets the first generation request
    return OpenAIEngine(EngineSettings(backend="openai", base_url=server.url, server_scoring="top-logprobs", workers=1))


def test_after_four_tries_the_engine_gives_up_with_one_line(server, short_waits):
    engine = _engine(server)
    server.script["/v1/chat/completions"] = [503, 429, 500, 503, 503]  # a fifth try would fail too
    try:
        with pytest.raises(ApoError) as info:
            engine.generate([GenerationRequest("Say yes.", max_tokens=4)])
    finally:
        engine.close()
    message = str(info.value)
    assert "\n" not in message and "/v1/chat/completions -> 503 (4 tries): scripted 503 second line" in message
    assert len(server.requests_to("/v1/chat/completions")) == 4 and server.script["/v1/chat/completions"] == [503]


def test_an_unreachable_server_is_tried_four_times_then_one_line(short_waits):
    with FakeServer() as gone:
        url = gone.url
    with pytest.raises(ApoError) as info:  # the port is closed now: connection refused, four times
        OpenAIEngine(EngineSettings(backend="openai", base_url=url))
    assert "\n" not in str(info.value) and "unreachable (4 tries): ConnectError" in str(info.value)


def test_a_refused_request_fails_alone_without_a_retry(server, short_waits):
    engine = _engine(server)
    server.script["/v1/chat/completions"] = [400]
    try:
        refused, fine = engine.generate([GenerationRequest("a", max_tokens=4), GenerationRequest("b", max_tokens=4)])
    finally:
        engine.close()
    assert refused.error and "-> 400: scripted 400" in refused.error and not refused.texts
    assert fine.error is None and fine.texts
    assert len(server.requests_to("/v1/chat/completions")) == 2


KEY = "sk-apotest-openai-key-5e8d21c4b7a9"


def test_the_api_key_is_sent_and_written_nowhere(server, tmp_path, monkeypatch, capfd, caplog):
    """A whole run through the openai backend with the key set: every request carries it; no file of the run
    directory, the result cache or the user-level cache folder holds it, nor does the command's output or log."""
    caplog.set_level("DEBUG")  # under pytest the command's log lines land here
    monkeypatch.setenv("APO_LOCAL_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("APO_LOCAL_CACHE_DIR", str(tmp_path / "user-cache"))
    config = {
        **CLI_RUN,
        "cache": str(tmp_path / "cache" / "results.sqlite"),
        "target": {"backend": "openai", "base_url": server.url, "workers": 2},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    res = CliRunner().invoke(cli, ["optimize", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, (res.output[-3000:], res.exception)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["rounds_completed"] == 1

    chat = server.requests_to("/v1/chat/completions")
    assert len(chat) > 10 and {s.body["model"] for s in chat} == {SERVED}
    assert {s.headers.get("Authorization") for s in server.seen} == {f"Bearer {KEY}"}  # the key was in use

    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "run.yaml"]
    assert any(p.suffix == ".sqlite" and p.stat().st_size > 0 for p in files)  # the cache was written
    assert (tmp_path / "run" / "trace.jsonl").stat().st_size > 0
    holding = [str(p.relative_to(tmp_path)) for p in files if KEY.encode() in p.read_bytes()]
    printed = capfd.readouterr()
    assert "label scoring by top-logprobs" in caplog.text  # the log was captured
    assert holding == [] and KEY not in res.output + printed.out + printed.err + caplog.text
