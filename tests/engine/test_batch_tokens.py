"""Batched, joined prompt tokenization (no engine; the embedded model's real tokenizer and template):
the ids are exactly ``ChatFormatter.prompt_ids``'s, joined or not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apo_local.engine.batch_tokens import BatchTokenizer, SplitPrompt
from apo_local.scoring import Scorer

ROOT = Path(__file__).resolve().parents[2]
ODD = [
    "",
    "x",
    "Answer: ",
    "trailing space ",
    "ends with a newline\n",
    "  ",
    "two\n\nparagraphs\n\n",
    "quote at the end '",
    "it's",
    "emoji 🙂 and ünïcödé",
    "<|im_end|> inside",
    "{{ braces }}",
    "tab\t",
]


@pytest.fixture(scope="module")
def chat():
    from transformers import AutoTokenizer

    from apo_local.engine.chat import ChatFormatter
    from apo_local.models.registry import chat_template_for, resolve_model

    path = resolve_model(None)
    return ChatFormatter(AutoTokenizer.from_pretrained(str(path)), chat_template_for(path), {}, name=str(path))


class _NoEngine:
    model_id, max_model_len = "none", 2048


def _prompts(liar, instructions, rows):
    scorer = Scorer(liar, _NoEngine())
    return [scorer.prompt(ins, ex) for ins in instructions for ex in rows]


def test_joined_ids_equal_the_full_tokenization(chat, liar):
    texts = [c["text"] for c in json.loads((ROOT / "scripts" / "bench_instructions.json").read_text())["instructions"]]
    rows = liar.split("train")[:25] + liar.split("test")[:5]
    prompts = _prompts(liar, texts[:24] + ODD, rows)
    assert all(isinstance(p, SplitPrompt) for p in prompts)
    assert [str(p) for p in prompts] == [liar.render(i, ex) for i in texts[:24] + ODD for ex in rows]
    bt = BatchTokenizer(chat)
    assert bt.wrap is not None and bt.join
    got = bt.ids(prompts)
    assert got == [chat.prompt_ids(str(p)) for p in prompts]
    assert bt.stats["joined"] >= 0.9 * len(prompts)  # nearly every prompt joined, none wrong
    assert bt.ids([str(p) for p in prompts[:5]]) == got[:5]  # plain strings: tokenized whole, same ids


def test_a_joint_inside_a_pre_token_is_tokenized_whole(chat):
    bt = BatchTokenizer(chat)
    assert not bt._safe_joint("# Task\nhello", "world")  # "helloworld" is one pre-token: they would merge
    assert bt._safe_joint("# Task\nhello", " world")
    assert not bt._safe_joint("Text:", "<|im_end|>")  # added tokens are split before pre-tokenizing: no claim
    one_piece = SplitPrompt("word", " and more")  # a head of one pre-token: nothing to join
    assert bt.ids([one_piece]) == [chat.prompt_ids(str(one_piece))] and bt.stats["joined"] == 0


def test_a_wrong_join_is_caught_and_joining_turns_off(chat, liar, caplog):
    bt = BatchTokenizer(chat)
    prompts = _prompts(liar, ["Decide whether the statement is a lie."], liar.split("train")[:4])
    real_head = bt._head
    bt._head = lambda head: (lambda ids, c, s: (ids, c - 3, s))(*real_head(head))  # a joint inside a word
    bt._safe_joint = lambda left, right: True
    got = bt.ids(prompts)
    assert got == [chat.prompt_ids(str(p)) for p in prompts]
    assert not bt.join and "tokenized whole" in caplog.text


def test_template_that_changes_its_input_renders_each_prompt(liar, monkeypatch):
    from apo_local.tasks.template import PromptTemplate

    monkeypatch.setattr(liar, "template", PromptTemplate("{{ instruction }}\nText: {{ input | upper }}\nLabel:"))
    (p,) = _prompts(liar, ["Is it a lie?"], liar.split("train")[:1])
    assert not isinstance(p, SplitPrompt) and p == liar.render("Is it a lie?", liar.split("train")[0])
