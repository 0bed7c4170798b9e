"""The transformers fallback backend, on the real embedded model (SmolLM2-135M-Instruct, float32, CPU).

One engine for the whole module; prompts and budgets are small so the file runs in well under a
minute on two CPU cores. No vLLM here.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from apo_local.engine.hf_engine import TransformersEngine  # noqa: E402
from apo_local.engine.protocol import Engine, GenerationRequest  # noqa: E402
from apo_local.engine.settings import EngineSettings  # noqa: E402
from apo_local.support.errors import ApoError  # noqa: E402

LIAR = Path(__file__).resolve().parents[2] / "apo_local" / "tasks" / "builtin" / "liar" / "train.jsonl"
TOO_LONG = "lorem ipsum dolor " * 1000  # ~3000 tokens > max_model_len 2048


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for this module: on a small shared box (2 cores, other tests or vLLM
    processes busy) a 2-thread OpenMP team stalls on every one of the many tiny ops of a 135M
    model, which made this file several times slower; one thread keeps it fast and steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine() -> TransformersEngine:
    from apo_local.models.registry import resolve_model

    path = resolve_model(None)
    return TransformersEngine(path, EngineSettings(backend="transformers", dtype="float32", max_model_len=2048))


@pytest.fixture(scope="module")
def liar_prompts() -> list[str]:
    rows = [json.loads(line)["text"] for line in LIAR.read_text().splitlines()[:4]]
    return [f"Is the following statement true? Answer Yes or No.\n\n{text}" for text in rows]


def direct_logprob(engine: TransformersEngine, prompt: str, label: str | tuple[int, ...]) -> float:
    """log P(label | prompt) from one unpadded forward pass and a full-vocabulary log-softmax
    (``label``: a text, or the token ids to score)."""
    ids = engine.chat.prompt_ids(prompt)
    lab = list(engine.chat.continuation_ids(label) if isinstance(label, str) else label)
    with torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([ids + lab])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[len(ids) - 1 + d, tok].item() for d, tok in enumerate(lab))


def test_identity_and_protocol(engine):
    assert isinstance(engine, Engine)
    name, dtype, max_len, backend = engine.model_id.split("|")
    assert name.startswith("smollm2-135m@") and dtype == "float32" and backend == "hf"
    assert int(max_len) == engine.max_model_len == 2048  # min(settings 2048, config 8192)
    assert engine.count_tokens(["hi", "hello there, how are you?"])[0] < engine.count_tokens(["x " * 50])[0]


def test_load_failure_is_one_line_naming_folder(tmp_path):
    with pytest.raises(ApoError) as err:
        TransformersEngine(tmp_path, EngineSettings(backend="transformers"))
    msg = str(err.value)
    assert str(tmp_path) in msg and "\n" not in msg


def test_score_single_token_labels_on_liar(engine, liar_prompts):
    labels = ["Yes", "No"]
    assert all(len(engine.chat.continuation_ids(lab)) == 1 for lab in labels)
    scores = engine.score_choices(liar_prompts, labels)
    assert len(scores) == 4
    assert [s.input_tokens for s in scores] == engine.count_tokens(liar_prompts)
    assert len({s.input_tokens for s in scores}) > 1  # different lengths: the batch is really padded
    for prompt, s in zip(liar_prompts, scores):
        assert s.error is None and s.best in (0, 1)
        assert all(math.isfinite(lp) and lp <= 0.0 for lp in s.logprobs)
        assert sum(math.exp(lp) for lp in s.logprobs) <= 1.0 + 1e-5  # disjoint next-token events
        # The same numbers from a manual, unbatched full-vocabulary log-softmax of the next token.
        ids = engine.chat.prompt_ids(prompt)
        with torch.inference_mode():
            last = engine.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        full = torch.log_softmax(last, dim=-1)
        for lab, lp in zip(labels, s.logprobs):
            assert lp == pytest.approx(full[engine.chat.continuation_ids(lab)[0]].item(), abs=1e-3)


def test_score_multi_token_labels_match_direct_computation(engine, liar_prompts):
    # "neutral" is a token-prefix of "neutral statement": both come out of one forward pass.
    labels = ["positive", "negative", "neutral", "neutral statement"]
    assert max(len(engine.chat.continuation_ids(lab)) for lab in labels) > 1
    prompts = [*liar_prompts[:2], "Classify the sentiment of: I loved this film."]
    scores = engine.score_choices(prompts, labels)
    # "neutral" is a prefix of "neutral statement": every label is scored up to the end of the turn,
    # so either can win
    scored = engine.chat.label_ids(labels)
    assert all(ids[-1] == engine.chat.end_of_turn_id() for ids in scored)
    for prompt, s in zip(prompts, scores):
        assert s.error is None
        for ids, lp in zip(scored, s.logprobs):
            assert lp == pytest.approx(direct_logprob(engine, prompt, ids), abs=1e-3)


def test_score_too_long_prompt_fails_alone(engine):
    labels = ["Yes", "No"]
    scores = engine.score_choices([TOO_LONG, "Is water wet? Answer Yes or No."], labels)
    bad, good = scores
    n = engine.count_tokens([TOO_LONG])[0]
    assert n > engine.max_model_len
    assert bad.error == f"prompt too long ({n} tokens > {engine.max_model_len - 1})"
    assert bad.logprobs == (-math.inf, -math.inf) and bad.best is None and bad.input_tokens == n
    assert good.error is None and all(math.isfinite(lp) for lp in good.logprobs)


def test_greedy_generation_is_deterministic(engine):
    req = GenerationRequest("Name three primary colors.", max_tokens=16)
    other = GenerationRequest("Write one short sentence about the moon, please, in plain English.", max_tokens=8)
    first = engine.generate([req])[0]
    again = engine.generate([req])[0]
    batched = engine.generate([other, req])[1]  # padded in a batch with a longer prompt
    assert first.error is None and first.text.strip()
    assert first.input_tokens == engine.count_tokens([req.prompt])[0]
    assert 0 < first.output_tokens <= 16
    assert again == first
    # The decode loop agrees with transformers' own greedy generate.
    ids = torch.tensor([engine.chat.prompt_ids(req.prompt)])
    with torch.inference_mode():
        ref = engine.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    assert first.text == engine.tokenizer.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
    assert first.output_tokens == ref.shape[1] - ids.shape[1]
    assert batched.texts == first.texts
    two = engine.generate([GenerationRequest(req.prompt, max_tokens=16, n=2)])[0]
    assert two.texts == (first.text, first.text)


def test_seeded_sampling_repeats_and_seeds_differ(engine):
    def req(seed: int, n: int = 1) -> GenerationRequest:
        return GenerationRequest("Invent a name for a cat.", temperature=1.0, top_p=0.95, max_tokens=12, n=n, seed=seed)

    a = engine.generate([req(1)])[0]
    assert a.error is None and a.output_tokens > 0
    assert engine.generate([req(1)])[0] == a
    # In a padded batch with other requests, a seeded request draws the same sample; sample 0 of
    # n uses the request's own seed; other seeds give other samples.
    hello = GenerationRequest("Say hello.", temperature=1.0, max_tokens=4)
    mixed = engine.generate([hello, req(1, n=2), req(2), req(3)])
    assert mixed[1].texts[0] == a.text and len(mixed[1].texts) == 2
    assert len({a.text, mixed[2].text, mixed[3].text}) > 1


def test_stop_strings_truncate(engine):
    prompt = "Count from one to twenty in words, separated by commas."
    full = engine.generate([GenerationRequest(prompt, max_tokens=24)])[0]
    text = full.text
    assert len(text) > 8
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = engine.generate([GenerationRequest(prompt, max_tokens=24, stop=("NEVER-SEEN", stop))])[0]
    assert cut.error is None
    assert cut.text == text[: text.find(stop)]
    assert cut.output_tokens < full.output_tokens


def test_too_long_and_clamped_generation(engine):
    gens = engine.generate([GenerationRequest(TOO_LONG, max_tokens=5), GenerationRequest("Hi!", max_tokens=0)])
    n = engine.count_tokens([TOO_LONG])[0]
    assert gens[0].texts == () and gens[0].output_tokens == 0 and gens[0].input_tokens == n
    assert gens[0].error == f"prompt too long ({n} tokens > {engine.max_model_len - 1})"  # one token of room
    assert gens[1].error is None and gens[1].texts == ("",) and gens[1].output_tokens == 0
    # max_tokens is clamped to the room left in the context.
    prompt = "Tell me a long story about a dragon."
    n_in = engine.count_tokens([prompt])[0]
    small = copy.copy(engine)
    small.max_model_len = n_in + 3
    gen = small.generate([GenerationRequest(prompt, max_tokens=50)])[0]
    assert gen.error is None and 0 < gen.output_tokens <= 3
    small.max_model_len = n_in
    assert small.generate([GenerationRequest(prompt)])[0].error == f"prompt too long ({n_in} tokens > {n_in - 1})"


def test_guided_replies_keep_their_shape_and_truncation_is_reported(engine):
    """A reply shape masks the logits (xgrammar): the reply has its tags from the first token, a choice is
    one of the options; a reply cut by max_tokens says so (finish reason "length")."""
    pytest.importorskip("xgrammar")
    import re

    from apo_local.search.reply_shapes import choice, tagged

    ask = "Write one short instruction for classifying statements. Wrap it with <START> and <END>."
    free, guided, yes_no, cut = engine.generate(
        [
            GenerationRequest(ask, max_tokens=12),
            GenerationRequest(ask, max_tokens=64, shape=tagged(1)),
            GenerationRequest("Is the sky green? Answer Yes or No.", max_tokens=8, shape=choice(["Yes", "No"])),
            GenerationRequest(ask, max_tokens=3, shape=tagged(1)),
        ]
    )
    assert not free.text.startswith("<START>")  # the model's own first words, unguided
    assert guided.text.startswith("<START>")
    assert guided.finish_reasons == ("length",) or re.fullmatch(tagged(1).spec, guided.text)
    assert yes_no.text in ("Yes", "No") and yes_no.finish_reasons == ("stop",)
    assert cut.finish_reasons == ("length",) and cut.output_tokens == 3
