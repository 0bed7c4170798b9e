"""HttpEngine against a real local vLLM OpenAI-compatible server (127.0.0.1, the session's one server:
tests/conftest.py ``vllm_server``). Slow (the server takes about a minute to become healthy on a 2-core CPU).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from apo_local.engine import GenerationRequest, RoleEngine, Trace
from apo_local.scoring import Scorer
from apo_local.tasks import load_task, parse_label

pytestmark = [pytest.mark.engine, pytest.mark.slow]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # the benchmarks' reference client


@pytest.fixture(scope="module")
def server(vllm_server):
    return vllm_server  # the session's one server (tests/conftest.py), shared with test_openai_engine_e2e.py


@pytest.fixture(scope="module")
def engine(server):
    from http_engine import HttpEngine

    eng = HttpEngine(server.base_url, server.model_path, workers=4, max_model_len=2048, tokenizer=server.model_path)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def prompts():
    task = load_task("liar")
    return task, [task.render(task.initial_instruction, ex) for ex in task.split("test")[:6]]


def test_generate_counts_tokens_and_is_greedy(engine, prompts):
    _, ps = prompts
    gens = engine.generate([GenerationRequest(p, temperature=0.0, max_tokens=4) for p in ps])
    assert len(gens) == len(ps)
    for g, n in zip(gens, engine.count_tokens(ps)):
        assert g.error is None and len(g.texts) == 1
        assert g.input_tokens == n  # the server's usage agrees with the local chat template
        assert 1 <= g.output_tokens <= 4
    again = engine.generate([GenerationRequest(p, temperature=0.0, max_tokens=4) for p in ps])
    assert [g.text for g in again] == [g.text for g in gens]


def test_score_choices_agrees_with_parsed_answer(engine, prompts):
    task, ps = prompts
    gens = engine.generate([GenerationRequest(p, temperature=0.0, max_tokens=4) for p in ps])
    scores = engine.score_choices(ps, task.labels)
    for g, s in zip(gens, scores):
        label = parse_label(g.text, task.labels)
        if label is None:
            assert s.error is not None and s.best is None
        else:
            assert s.error is None and task.labels[s.best] == label
            assert sorted(s.logprobs) == [-math.inf, 0.0]


def test_too_long_prompt_is_a_result_not_a_crash(engine, prompts, server):
    task, ps = prompts
    long = task.render("word " * 3000, task.split("test")[0])
    engine_remote = type(engine)(
        server.base_url, server.model_path, workers=2, max_model_len=2048
    )  # no local tokenizer
    for eng in (engine, engine_remote):
        gens = eng.generate([GenerationRequest(long, max_tokens=4), GenerationRequest(ps[0], max_tokens=4)])
        assert gens[0].error and not gens[0].texts
        assert gens[1].error is None
        scores = eng.score_choices([long, ps[0]], task.labels)
        assert scores[0].error and scores[0].best is None
    assert engine_remote.count_tokens([ps[0]]) == engine.count_tokens([ps[0]])
    engine_remote.close()


def test_scorer_generate_mode_through_role_engine(engine, prompts):
    task, _ = prompts
    trace = Trace()
    scorer = Scorer(task, RoleEngine(engine, "target", trace), mode="generate", max_tokens=4, dedupe=False)
    ex = task.split("test")[:3]
    preds = scorer.predict([(task.initial_instruction, e) for e in ex + ex])
    assert len(preds) == 6 and preds[:3] == preds[3:]
    assert trace.totals["target"].prompts == 6  # no dedupe: identical pairs are re-sent
