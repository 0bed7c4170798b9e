"""Guided optimizer replies and truncation on the real vLLM engine (embedded SmolLM2-135M, CPU): the reply
shape goes through vLLM's structured outputs, every sample reports its finish reason."""

from __future__ import annotations

import re

import pytest

from apo_local.engine import GenerationRequest, RoleEngine, Trace
from apo_local.engine.protocol import ReplyShape
from apo_local.run.config import build_config
from apo_local.search.meta_prompts import MetaPrompts
from apo_local.search.optimizer_calls import OptimizerCalls
from apo_local.search.repetition import REPEAT_STOP
from apo_local.search.reply_shapes import abo_steps, choice, tagged
from apo_local.search.streams import Streams

pytestmark = pytest.mark.engine


def test_vllm_structured_outputs_shape_the_reply_and_finish_reasons_tell_truncation(engine):
    ask = "Write one short instruction for classifying statements. Wrap it with <START> and <END>."
    free, guided, steps, yes_no, cut = engine.generate(
        [
            GenerationRequest(ask, max_tokens=16, seed=3),
            GenerationRequest(ask, max_tokens=96, seed=3, shape=tagged(1)),
            GenerationRequest(ask, max_tokens=96, seed=3, shape=abo_steps(False)),
            GenerationRequest("Is the sky green? Answer Yes or No.", max_tokens=8, shape=choice(["Yes", "No"])),
            GenerationRequest(ask, max_tokens=4, seed=3, shape=tagged(1)),
        ]
    )
    assert not free.text.startswith("<START>")  # unguided, the model starts with its own words
    for g, shape in ((guided, tagged(1)), (steps, abo_steps(False))):
        assert g.text.startswith("<START>")
        assert g.finish_reasons == ("length",) or re.fullmatch(shape.spec, g.text), g.text
    assert steps.text.startswith("<START>1. ")
    assert yes_no.text in ("Yes", "No") and yes_no.finish_reasons == ("stop",)
    assert cut.finish_reasons == ("length",) and cut.truncated(0)


def test_guided_optimizer_step_never_uses_a_reply_whole_and_drops_truncated_ones(engine):
    """The same seeded rewrite step, guided and free text: guided, every reply that finished carries its
    tags (none used whole); every truncated one is counted and gives no item. The shape is sized to the
    budget (items bounded in words), so every guided reply closes its item: none is truncated."""
    meta, prompt = MetaPrompts(), "Determine whether the Statement is a lie (Yes) or not (No)."
    out = {}
    for guided in (True, False):
        cfg = build_config({"optimizer": {"max_tokens": 64, "guided": guided}})
        trace = Trace()
        calls = OptimizerCalls(RoleEngine(engine, "optimizer", trace), cfg.optimizer, "whole", Streams(0, 1))
        replies = calls.ask("rewrite", [meta.render("rewrite", prompt=prompt)], n=6, shape=tagged(1, max_tokens=64))
        items = calls.sample_items(replies[0], "rewrite")
        out[guided] = (trace.counts, items, replies[0])
    counts, items, reply = out[True]
    assert counts["replies"] == counts["replies_guided"] == 6 and "replies_used_whole" not in counts
    assert len(items) == 6 - counts.get("replies_truncated", 0) == len(reply.texts)
    assert counts.get("replies_truncated", 0) == 0, counts
    free_counts, _, _ = out[False]
    assert free_counts["replies"] == 6 and "replies_guided" not in free_counts


def test_vllm_stops_a_sample_that_repeats_itself(engine):
    """A request's repetition rule reaches vLLM (``repetition_detection``): a reply forced to loop ends after
    two copies of an 8+ token block with finish reason ``repetition``, not at max_tokens."""
    loop = ReplyShape("regex", "(?:la ){200}")  # no way out but the token budget
    stopped, free = engine.generate(
        [
            GenerationRequest("Sing.", max_tokens=64, seed=1, shape=loop, repetition=REPEAT_STOP),
            GenerationRequest("Sing.", max_tokens=64, seed=1, shape=loop),
        ]
    )
    assert stopped.finish_reasons == ("repetition",) and stopped.output_tokens < 64, stopped
    assert free.finish_reasons == ("length",) and free.output_tokens == 64
