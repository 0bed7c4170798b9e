"""Guided reply shapes, truncation as a rejection, candidate hygiene and their counts (pure logic, no engine:
the optimizer engine is a stand-in that returns scripted replies)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from apo_local.config import build_config
from apo_local.engine import Generation, RoleEngine, Trace
from apo_local.engine.cache import CachedEngine, ResultCache
from apo_local.engine.protocol import GenerationRequest, ReplyShape
from apo_local.search.admission import Admission
from apo_local.search.hygiene import Hygiene, rule
from apo_local.search.optimizer_calls import OptimizerCalls
from apo_local.search.reply_shapes import abo_steps, choice, tagged
from apo_local.search.result import replies_line, reply_summary
from apo_local.search.state import Candidate, Status
from apo_local.search.streams import Streams
from apo_local.tasks import load_task

LIAR_INSTRUCTION = ("Determine whether the Statement is a lie (Yes) or not (No) based on the Context and other "
                    "information.")


# -- shapes ----------------------------------------------------------------------------------------


def test_tagged_shape_matches_tagged_items_only():
    two = re.compile(tagged(2).spec)
    assert two.fullmatch("<START>Reason one.<END>\n<START>Reason\ntwo.<END>")
    assert not two.fullmatch("Reason one.")  # no tags: impossible under guidance
    assert not two.fullmatch("<START>only one<END>")
    assert not two.fullmatch("Sure! <START>a<END>\n<START>b<END>")  # nothing around the items
    assert not two.fullmatch("<START> <END>\n<START>b<END>")  # no blank item
    assert not two.fullmatch("<START>a <START>b<END>\n<START>c<END>")  # no nested tag
    one_line = re.compile(tagged(1, one_line=True).spec)
    assert one_line.fullmatch("<START>Check the context first.<END>")
    assert not one_line.fullmatch("<START>two\nlines<END>")


def test_abo_shape_numbers_steps_in_order_and_asks_for_the_demonstration():
    with_demo = re.compile(abo_steps(True).spec)
    good = "<START>1. Read the statement.\n2. Answer Yes or No.\n\nDemonstration:\nStep 1: read.\nStep 2: No<END>"
    assert with_demo.fullmatch(good)
    assert not with_demo.fullmatch("<START>1. Read.\n3. Answer.\n\nDemonstration:\nx<END>")  # numbers count up
    assert not with_demo.fullmatch("<START>1. Read the statement.<END>")  # demonstration missing
    without = re.compile(abo_steps(False).spec)
    assert without.fullmatch("<START>1. Read the statement.\n2. Answer Yes or No.<END>")
    assert not without.fullmatch("<START>Read the statement.<END>")


def test_shapes_compile_for_the_model_tokenizer():
    """The grammar backend (xgrammar, what vLLM uses by default) takes every shape the optimizer declares."""
    xgr = pytest.importorskip("xgrammar")
    transformers = pytest.importorskip("transformers")
    from apo_local.models import resolve_model

    tok = transformers.AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m")), local_files_only=True)
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok))
    for shape in (tagged(1), tagged(3), tagged(1, one_line=True), abo_steps(True), abo_steps(False)):
        compiler.compile_regex(shape.spec)


def test_shape_is_part_of_the_request_settings_only_when_set():
    assert "shape" not in GenerationRequest("p").settings()  # unguided requests keep their cache keys
    assert GenerationRequest("p", shape=choice(["yes", "no"])).settings()["shape"] == {"kind": "choice",
                                                                                      "spec": "yes\nno"}
    with pytest.raises(ValueError):
        ReplyShape("ebnf?", "x")


def test_finish_reasons_survive_the_result_cache(tmp_path):
    class Inner:
        model_id, max_model_len = "m", 2048

        def generate(self, reqs):
            return [Generation(("a", "b"), 3, 9, None, ("stop", "length")) for _ in reqs]

    cached = CachedEngine(Inner(), ResultCache(tmp_path / "c.sqlite"))
    first = cached.generate([GenerationRequest("p", seed=1)])
    again = cached.generate([GenerationRequest("p", seed=1)])
    assert cached.hits == 1 and first == again and again[0].truncated(1) and not again[0].truncated(0)


# -- optimizer calls: guidance knob, truncation ----------------------------------------------------


class Scripted:
    """A stand-in optimizer engine: each request gets the next scripted (texts, finish reasons)."""

    model_id, max_model_len, hits = "scripted", 2048, 0

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []

    def generate(self, reqs):
        self.requests += reqs
        return [Generation(tuple(t), 10, 20, None, tuple(f)) for t, f in (self.replies.pop(0) for _ in reqs)]


def calls_for(replies, **optimizer):
    cfg = build_config({"optimizer": optimizer})
    engine, trace = Scripted(replies), Trace()
    return OptimizerCalls(RoleEngine(engine, "optimizer", trace), cfg.optimizer, "whole", Streams(0, 1)), engine, trace


def test_guided_knob_puts_the_shape_on_the_request_or_not():
    calls, engine, _ = calls_for([(["<START>x<END>"], ["stop"])])
    calls.ask("edit", ["p"], shape=tagged(1))
    assert engine.requests[0].shape == tagged(1)
    calls, engine, trace = calls_for([(["x y z"], ["stop"])], guided=False)
    calls.ask("edit", ["p"], shape=tagged(1))
    assert engine.requests[0].shape is None and trace.counts.get("replies_guided") is None


def test_a_truncated_reply_never_becomes_an_item_and_is_counted_with_its_reason(tmp_path):
    calls, _, trace = calls_for([(["<START>good one<END>", "<START>cut off in the midd"], ["stop", "length"])])
    trace.path = tmp_path / "trace.jsonl"
    reply = calls.ask("rewrite", ["p"], n=2, shape=tagged(1))[0]
    assert calls.sample_items(reply, "rewrite") == ["good one"]
    assert trace.counts == {"replies": 2, "replies_guided": 2, "replies_truncated": 1}
    event = [e for e in map(json.loads, trace.path.read_text().splitlines()) if "event" in e][0]
    assert event["event"] == "reply_truncated" and event["reason"] == "max_tokens reached"
    assert event["purpose"] == "rewrite" and "parse_failure" not in trace.faults


def test_a_truncated_single_reply_gives_nothing_not_a_whole_reply_fallback():
    calls, _, trace = calls_for([(["This edit improves the prompt by making it clearer and more and more"],
                                  ["length"])], guided=False)
    reply = calls.ask("edit", ["p"])[0]
    assert calls.parse(reply.text, "edit") == [] and "replies_used_whole" not in trace.counts


def test_a_truncated_critique_is_kept_as_context():
    calls, _, trace = calls_for([(["The outputs miss the con"], ["length"])])
    assert calls.ask("critique", ["p"], keep_truncated=True)[0].text == "The outputs miss the con"
    assert trace.counts["replies_truncated"] == 1


def test_used_whole_is_counted_for_untagged_free_text():
    calls, _, trace = calls_for([(["Classify the statement as Yes or No."], ["stop"])], guided=False)
    assert calls.parse(calls.ask("edit", ["p"])[0].text, "edit") == ["Classify the statement as Yes or No."]
    assert trace.counts["replies_used_whole"] == 1
    assert calls.parse("Classify it as Yes or No.", "paraphrase", tagged=False)  # plain text asked: not counted
    assert trace.counts["replies_used_whole"] == 1


# -- hygiene ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def liar_hygiene():
    task = load_task("liar")
    return Hygiene([ex.input for ex in task.split("train")], task.labels)


@pytest.mark.parametrize("text, why", [
    ("Please continue with your next prompt.", "chat filler"),
    ("This edit improves the prompt by telling the model to answer Yes or No.", "chat filler"),
    ("Sure! Decide whether the statement is a lie (Yes) or not (No).", "chat filler"),
    ("I have revised the prompt: answer Yes or No.", "chat filler"),
    ("No", "too short"),
    ("Determine whether the Statement is true based on the Context.", "drops label words"),
    ("Answer Yes if the statement is a lie. Answer Yes if the statement is a lie. Otherwise No.",
     "repeated sentence"),
])
def test_hygiene_rules_reject_what_small_models_write(liar_hygiene, text, why):
    assert rule(liar_hygiene.reason(text, LIAR_INSTRUCTION)) == why


def test_hygiene_rejects_a_copied_training_row(liar_hygiene):
    row = load_task("liar").split("train")[3].input
    assert rule(liar_hygiene.reason(f"Yes or No. {row}", LIAR_INSTRUCTION)) == "copies training data"


@pytest.mark.parametrize("text", [
    LIAR_INSTRUCTION,
    "Read the Statement and its Context. Answer Yes if the statement is false or misleading, otherwise No.",
    "Follow these steps:\n1. Read the statement.\n2. Answer Yes or No.\n\nDemonstration:\n"
    "Step 1: Says the Annies List political group supports third-trimester abortions on demand.\nStep 2: Yes",
])
def test_hygiene_keeps_real_instructions(liar_hygiene, text):
    assert liar_hygiene.reason(text, LIAR_INSTRUCTION) is None


def test_labels_are_only_required_when_the_parent_had_them(liar_hygiene):
    assert liar_hygiene.reason("Decide whether the statement is a lie.", "Decide whether it is a lie.") is None


class Target:
    max_model_len = 2048

    def count_tokens(self, prompts):
        return [len(p.split()) for p in prompts]


def test_admission_counts_proposals_by_rule_and_the_summary_reports_them(liar_hygiene):
    task, trace = load_task("liar"), Trace()
    admission = Admission(task, Target(), trace, max_expansion=4, hygiene=liar_hygiene)
    parent = Candidate(LIAR_INSTRUCTION, 0, "initial", status=Status.KEPT)
    texts = ["Please continue with your next prompt.", "No", " " + LIAR_INSTRUCTION,
             "Read the Statement and its Context; answer Yes if it is a lie, otherwise No."]
    out = admission.admit_and_cap([Candidate(t, 1, "edit", parent=parent.id) for t in texts], [parent], Streams(0, 1))
    assert [c.status for c in out] == [Status.REJECTED] * 3 + [Status.NEW]
    summary = reply_summary(trace.counts, guided=True)
    assert summary["proposals"] == 4 and summary["accepted"] == 1 and summary["accepted_share"] == 0.25
    assert summary["rejected"] == {"chat filler": 1, "identical to parent": 1, "too short": 1}
    assert "accepted=1 (25%)" in replies_line(summary) and "chat filler 1" in replies_line(summary)


def test_hygiene_off_admits_filler():
    trace = Trace()
    admission = Admission(load_task("liar"), Target(), trace, max_expansion=4)
    assert admission.reason("Please continue with your next prompt.", LIAR_INSTRUCTION) is None


def test_counts_travel_in_the_checkpoint(tmp_path: Path):
    from apo_local.search.state import RunState

    state = RunState.fresh("x")
    state.counts = {"replies": 3, "rejected:chat filler": 1}
    state.save(tmp_path / "c.json")
    assert RunState.load(tmp_path / "c.json").counts == state.counts
