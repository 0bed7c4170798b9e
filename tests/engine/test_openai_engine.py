"""The openai backend's pure logic: reply parsing, first-token scoring, the URL it talks to, config checks."""

from __future__ import annotations

import math

import pytest

from apo_local.engine.openai_client import ServerClient, ServerError
from apo_local.engine.openai_engine import _first_token_logprob, parse_label
from apo_local.run.config import build_config
from apo_local.support.errors import ApoError


def test_parse_label_takes_the_longest_label_the_reply_starts_with():
    assert parse_label("  yes, it is a lie", ["Yes", "No"]) == 0
    assert parse_label('"No."', ["Yes", "No"]) == 1
    assert parse_label("False claim here", ["False", "False claim"]) == 1
    assert parse_label("Maybe", ["Yes", "No"]) is None


def test_first_token_logprob():
    top = [{"token": " Yes", "logprob": -0.5}, {"token": "No", "logprob": -1.5}, {"token": "Y", "logprob": -3.0}]
    assert _first_token_logprob(top, "Yes") == -0.5
    assert _first_token_logprob(top, "No") == -1.5
    assert _first_token_logprob(top, "Perhaps") == -math.inf


@pytest.mark.parametrize(
    "given, root",
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000"),
        ("http://gpu-box:8000", "http://gpu-box:8000"),
        ("https://gpu-box/llm/v1", "https://gpu-box/llm"),
    ],
)
def test_client_talks_to_the_base_url_only(given, root):
    c = ServerClient(given, None)
    try:
        assert c.root == root and c.base == root + "/v1"
        assert c._url("/v1/completions", False) == root + "/v1/completions"
        assert c._url("/tokenize", True) == root + "/tokenize"
        assert c.http._trust_env is False and c.http.follow_redirects is False  # no proxy, no redirect
    finally:
        c.close()


def test_client_refuses_a_url_without_host():
    with pytest.raises(ServerError):
        ServerClient("localhost:8000", None)


def test_unreachable_server_is_one_line():
    import apo_local.engine.openai_client as oc
    from apo_local.engine import EngineSettings
    from apo_local.engine.openai_engine import OpenAIEngine

    oc.RETRIES, old = 0, oc.RETRIES
    try:
        with pytest.raises(ApoError, match="unreachable"):
            OpenAIEngine(EngineSettings(backend="openai", base_url="http://127.0.0.1:9/v1"))
    finally:
        oc.RETRIES = old


def test_config_flags_and_checks():
    from apo_local.run.config import flag_names
    from apo_local.run.plan import RunPlan
    from apo_local.tasks import load_task

    flags = flag_names()
    assert flags["target.base_url"] == "target-base-url" and flags["optimizer.base_url"] == "optimizer-base-url"
    cfg = build_config({"target": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1"}})
    assert cfg.optimizer_engine_config().backend == "openai"  # the optimizer shares the server
    RunPlan.build(cfg, load_task("liar"))  # no model folder needed
    with pytest.raises(ApoError, match="target.base_url"):
        RunPlan.build(build_config({"target": {"backend": "openai"}}), load_task("liar"))
    with pytest.raises(ApoError, match="optimizer.base_url: only for backend openai"):
        RunPlan.build(build_config({"optimizer": {"base_url": "http://x:1/v1"}}), load_task("liar"))
