"""Guided reply shapes, truncation as a rejection, candidate hygiene and their counts (pure logic, no engine:
the optimizer engine is a stand-in that returns scripted replies)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from apo_local.engine import Generation, RoleEngine, Trace
from apo_local.engine.cache import CachedEngine, ResultCache
from apo_local.engine.protocol import GenerationRequest, ReplyShape, tail_repeats
from apo_local.run.config import build_config
from apo_local.run.result import replies_line, reply_summary
from apo_local.search.admission import Admission
from apo_local.search.hygiene import Hygiene, rule
from apo_local.search.optimizer_calls import OptimizerCalls
from apo_local.search.parsing import extract_tagged
from apo_local.search.repetition import REPEAT_STOP, cut_loop, phrase_loop, tail_loop
from apo_local.search.reply_shapes import (
    EOS_TOKENS,
    STEP_WORDS,
    TAG_TOKENS,
    TOKENS_PER_WORD,
    abo_budget,
    abo_steps,
    choice,
    item_words,
    tagged,
)
from apo_local.search.state import Candidate, Status
from apo_local.search.streams import Streams
from apo_local.tasks import load_task
from tests.helpers.scripted import ScriptedEngine

LIAR_INSTRUCTION = (
    "Determine whether the Statement is a lie (Yes) or not (No) based on the Context and other information."
)


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
    from apo_local.models.registry import resolve_model

    tok = transformers.AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m")), local_files_only=True)
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok))
    for shape in (tagged(1), tagged(3), tagged(1, one_line=True), abo_steps(True), abo_steps(False)):
        compiler.compile_regex(shape.spec)


def test_shape_is_part_of_the_request_settings_only_when_set():
    assert "shape" not in GenerationRequest("p").settings()  # unguided requests keep their cache keys
    assert GenerationRequest("p", shape=choice(["yes", "no"])).settings()["shape"] == {
        "kind": "choice",
        "spec": "yes\nno",
    }
    with pytest.raises(ValueError):
        ReplyShape("ebnf?", "x")


def test_finish_reasons_survive_the_result_cache(tmp_path):
    inner = ScriptedEngine(reply=lambda r: Generation(("a", "b"), 3, 9, None, ("stop", "length")))
    cached = CachedEngine(inner, ResultCache(tmp_path / "c.sqlite"))
    first = cached.generate([GenerationRequest("p", seed=1)])
    again = cached.generate([GenerationRequest("p", seed=1)])
    assert cached.hits == 1 and first == again and again[0].truncated(1) and not again[0].truncated(0)


# -- optimizer calls: guidance knob, truncation ----------------------------------------------------


def calls_for(replies, **optimizer):
    cfg = build_config({"optimizer": optimizer})
    engine, trace = ScriptedEngine(replies=replies), Trace()  # each request: the next (texts, finish reasons)
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
    calls, _, trace = calls_for(
        [(["This edit improves the prompt by making it clearer and more and more"], ["length"])], guided=False
    )
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


@pytest.mark.parametrize(
    "text, why",
    [
        ("Please continue with your next prompt.", "chat filler"),
        ("This edit improves the prompt by telling the model to answer Yes or No.", "chat filler"),
        ("Sure! Decide whether the statement is a lie (Yes) or not (No).", "chat filler"),
        ("I have revised the prompt: answer Yes or No.", "chat filler"),
        ("No", "too short"),
        ("Determine whether the Statement is true based on the Context.", "drops label words"),
        (
            "Answer Yes if the statement is a lie. Answer Yes if the statement is a lie. Otherwise No.",
            "repeated sentence",
        ),
    ],
)
def test_hygiene_rules_reject_what_small_models_write(liar_hygiene, text, why):
    assert rule(liar_hygiene.reason(text, LIAR_INSTRUCTION)) == why


def test_hygiene_rejects_a_copied_training_row(liar_hygiene):
    row = load_task("liar").split("train")[3].input
    assert rule(liar_hygiene.reason(f"Yes or No. {row}", LIAR_INSTRUCTION)) == "copies training data"


@pytest.mark.parametrize(
    "text",
    [
        LIAR_INSTRUCTION,
        "Read the Statement and its Context. Answer Yes if the statement is false or misleading, otherwise No.",
        "Follow these steps:\n1. Read the statement.\n2. Answer Yes or No.\n\nDemonstration:\n"
        "Step 1: Says the Annies List political group supports third-trimester abortions on demand.\nStep 2: Yes",
    ],
)
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
    texts = [
        "Please continue with your next prompt.",
        "No",
        " " + LIAR_INSTRUCTION,
        "Read the Statement and its Context; answer Yes if it is a lie, otherwise No.",
    ]
    out = admission.admit_and_cap([Candidate(t, 1, "edit", parent=parent.id) for t in texts], [parent], Streams(0, 1))
    assert [c.status for c in out] == [Status.REJECTED] * 3 + [Status.NEW]
    summary = reply_summary(trace.counts, trace.rejections, guided=True)
    assert summary["proposals"] == 4 and summary["accepted"] == 1 and summary["accepted_share"] == 0.25
    assert summary["rejected"] == {"chat filler": 1, "identical to parent": 1, "too short": 1}
    assert "accepted=1 (25%)" in replies_line(summary) and "chat filler 1" in replies_line(summary)


def test_hygiene_off_admits_filler():
    trace = Trace()
    admission = Admission(load_task("liar"), Target(), trace, max_expansion=4)
    assert admission.reason("Please continue with your next prompt.", LIAR_INSTRUCTION) is None


def test_counts_travel_in_the_checkpoint(tmp_path: Path):
    from apo_local.run.checkpoint import Checkpoint
    from apo_local.search.state import RunState

    state = RunState.fresh("x")
    state.counts, state.rejections = {"replies": 3}, {"chat filler": 1}
    Checkpoint(tmp_path / "c.json").save(state)
    loaded = Checkpoint(tmp_path / "c.json").load()
    assert (loaded.counts, loaded.rejections) == (state.counts, state.rejections)


def test_a_checkpoint_with_rejections_among_its_counts_resumes_with_them_by_rule(tmp_path: Path):
    """Checkpoints written before rejections had their own tally kept "rejected:<rule>" counts: they load by rule."""
    import json

    from apo_local.run.checkpoint import Checkpoint
    from apo_local.search.state import RunState

    data = RunState.fresh("x").to_dict()
    data["counts"] = {"replies": 3, "rejected:chat filler": 2, "rejected:too short": 1}
    del data["rejections"]
    (tmp_path / "c.json").write_text(json.dumps(data))
    loaded = Checkpoint(tmp_path / "c.json").load()
    assert loaded.counts == {"replies": 3} and loaded.rejections == {"chat filler": 2, "too short": 1}


# -- bounded items: every item closes within max_tokens ----------------------------------------------


def _words(n: int) -> str:
    """``n`` words of instruction-like English (the LIAR instruction's words, cycled)."""
    w = LIAR_INSTRUCTION.split()
    return " ".join(w[i % len(w)] for i in range(n))


@pytest.mark.parametrize("max_tokens, k", [(96, 1), (96, 2), (200, 1), (200, 2), (1024, 1), (1024, 3)])
def test_bounded_items_accept_the_bound_and_reject_one_word_more(max_tokens, k):
    n = item_words(max_tokens, k)
    shape = re.compile(tagged(k, max_tokens=max_tokens).spec)
    at_bound = "\n".join([f"<START>{_words(n)}<END>"] * k)
    assert shape.fullmatch(at_bound)
    assert not shape.fullmatch(at_bound.replace("<END>", " more<END>", 1))  # one word over, in any item
    assert shape.fullmatch("\n".join(["<START>Short reason.\n\nSecond line.<END>"] * k))  # lines, blank lines
    assert not shape.fullmatch("\n".join(["<START>a\n\n\n\n\nb<END>"] * k))  # no run of blank lines
    one_line = re.compile(tagged(1, one_line=True, max_tokens=max_tokens).spec)
    assert one_line.fullmatch(f"<START>{_words(item_words(max_tokens))}<END>")
    assert not one_line.fullmatch("<START>two\nlines<END>")


@pytest.mark.parametrize("max_tokens, k", [(96, 2), (200, 1), (200, 2), (1024, 3)])
def test_k_items_at_the_bound_fit_within_max_tokens(max_tokens, k):
    """By the bound's arithmetic (TOKENS_PER_WORD tokens a word, TAG_TOKENS per item), and counted by the
    embedded model's tokenizer on English text at the bound."""
    n = item_words(max_tokens, k)
    assert k * (n * TOKENS_PER_WORD + TAG_TOKENS) + EOS_TOKENS <= max_tokens
    tok = _tokenizer()
    reply = "\n".join([f"<START>{_words(n)}<END>"] * k)
    assert len(tok.encode(reply, add_special_tokens=False)) + EOS_TOKENS <= max_tokens


@pytest.mark.parametrize("max_tokens", [96, 200, 1024])
def test_abo_steps_bounded_fit_within_max_tokens(max_tokens):
    steps, per_step, demo_words = abo_budget(max_tokens, True)
    assert 1 <= steps <= 8 and per_step >= STEP_WORDS
    shape = re.compile(abo_steps(True, max_tokens=max_tokens).spec)
    full = (
        "<START>"
        + "\n".join(f"{i}. {_words(per_step)}" for i in range(1, steps + 1))
        + f"\n\nDemonstration:\n{_words(demo_words)}<END>"
    )
    assert shape.fullmatch(full)
    assert not shape.fullmatch(full.replace("\n\nDemonstration", " more\n\nDemonstration"))  # a longer step
    assert not shape.fullmatch(full.replace("<END>", " more<END>"))  # a longer demonstration
    if steps < 8:  # no step past the budget's count
        assert not shape.fullmatch(full.replace("\n\nDemonstration", f"\n{steps + 1}. One more.\n\nDemonstration"))
    assert len(_tokenizer().encode(full, add_special_tokens=False)) + EOS_TOKENS <= max_tokens
    without = re.compile(abo_steps(False, max_tokens=max_tokens).spec)
    assert without.fullmatch("<START>1. Read the statement.\n2. Answer Yes or No.<END>")


def test_bounded_shapes_compile_and_mask_fast_for_the_model_tokenizer():
    """Words with one fixed gap, not characters: xgrammar compiles a bounded word repeat in well under a
    second (a bounded character repeat takes seconds) and masks each token in well under a millisecond (a
    gap of variable width, ``\\s{1,4}``, costs 5 to 150 ms a token)."""
    import time

    xgr = pytest.importorskip("xgrammar")
    tok = _tokenizer()
    info = xgr.TokenizerInfo.from_huggingface(tok)
    compiler = xgr.GrammarCompiler(info, cache_enabled=False)
    reply = "<START>Read the Context.\n\n- Answer Yes or No.\nThen stop. <END>"
    for max_tokens in (96, 200, 1024):
        for shape in (
            tagged(1, max_tokens=max_tokens),
            tagged(3, max_tokens=max_tokens),
            abo_steps(True, max_tokens=max_tokens),
            abo_steps(False, max_tokens=max_tokens),
        ):
            start = time.perf_counter()
            compiler.compile_regex(shape.spec)
            assert time.perf_counter() - start < 10, shape  # about 0.02 s (ABO: up to 0.8 s); generous
        matcher, mask = (
            xgr.GrammarMatcher(compiler.compile_regex(tagged(1, max_tokens=max_tokens).spec)),
            xgr.allocate_token_bitmask(1, info.vocab_size),
        )
        ids = tok.encode(reply, add_special_tokens=False)
        start = time.perf_counter()
        for i in ids:
            matcher.fill_next_token_bitmask(mask)
            assert matcher.accept_token(i)
        assert (time.perf_counter() - start) / len(ids) < 0.005  # about 0.05 ms a token


_TOK = []


def _tokenizer():
    if not _TOK:
        transformers = pytest.importorskip("transformers")
        from apo_local.models.registry import resolve_model

        _TOK.append(
            transformers.AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m")), local_files_only=True)
        )
    return _TOK[0]


# -- loops: stopped by the engine, cut off the reply -----------------------------------------------


@pytest.mark.parametrize(
    "reply, stopped, kept, why",
    [
        (
            "<START>Answer Yes if it is a lie. Answer Yes if it is a lie. Answer Yes if",
            False,
            "<START>Answer Yes if it is a lie.<END>",
            "repeated sentence",
        ),
        (
            "<START>Read the Context. Answer Yes if it is a lie. Check the facts. Answer Yes if it is a lie.<END>",
            False,
            "<START>Read the Context. Answer Yes if it is a lie. Check the facts.<END>",
            "repeated sentence",
        ),
        (
            "<START>Use the label of the statement the label of the statement the label of",
            False,
            "<START>Use the label of the statement<END>",
            "repeated phrase",
        ),
        (
            "<START>1. Read the statement carefully.\n2. Read the statement carefully.\n3. Read the",
            True,
            "<START>1. Read the statement carefully.<END>",
            "repeated sentence",
        ),
        (
            "<START>It is vague.<END>\n<START>Say Yes or No. Say Yes or No.<END>",
            False,
            "<START>It is vague.<END>\n<START>Say Yes or No.<END>",
            "repeated sentence",
        ),
        (
            "<START>Decide Yes or No.<END>\n<START>Decide Yes or No.<END>\n<START>Decide Yes",
            True,
            "<START>Decide Yes or No.<END>",
            "repeated tail",
        ),
        ("<START>Check the facts!!!!!!!!!!!!!!!!!!!!!!", True, "<START>Check the facts!<END>", "repeated tail"),
        ("Answer No no no no no no no", False, "Answer No", "repeated phrase"),
    ],
)
def test_a_loop_is_cut_where_it_starts_and_the_item_closed(reply, stopped, kept, why):
    cut = cut_loop(reply, stopped)
    assert cut is not None and cut.text == kept and cut.reason == why and cut.dropped == len(reply) - len(kept)


@pytest.mark.parametrize(
    "reply",
    [
        "<START>" + LIAR_INSTRUCTION + "<END>",
        "<START>Answer step by step: read, then answer Yes or No.<END>",
        "<START>1. Read the statement.\n2. Read the context.\n3. Answer Yes or No.\n\nDemonstration:\nStep 1: "
        "read.\nStep 2: read.\nStep 3: No<END>",
        "Yes, yes: a very very short reply.",
        "<START>Check the facts!!<END>",
    ],
)
def test_replies_without_a_loop_are_not_cut(reply):
    assert cut_loop(reply) is None and cut_loop(reply, stopped=True) is None


def test_the_tail_rule_only_applies_when_the_engine_stopped_the_sample():
    assert cut_loop("<START>Check it!!!!!!!!!!!!!!!!!!!!!") is None
    assert tail_loop("abcabcabcabcabc") == 3 and tail_loop("abcabc") is None  # 6 characters: too short a run
    assert phrase_loop("no no no") is None and phrase_loop("no no no no") == 3


def test_what_a_cut_keeps_passes_hygiene(liar_hygiene):
    loops = [
        "Answer Yes or No. Read the Context. Answer Yes or No. Read the",
        "Decide Yes or No. Decide Yes or No. Decide Yes or No. Decide Yes or No.",
        "Answer Yes or No from the Context and the speaker of the speaker of the speaker of",
    ]
    for loop in loops:
        assert liar_hygiene.reason(loop, LIAR_INSTRUCTION) is not None or phrase_loop(loop) is not None
        item = extract_tagged(cut_loop(f"<START>{loop}", stopped=True).text).items[0]
        assert liar_hygiene.reason(item, LIAR_INSTRUCTION) is None, item


def test_a_looping_reply_is_cut_kept_and_counted_not_truncated(tmp_path):
    calls, engine, trace = calls_for(
        [
            (
                [
                    "<START>Answer Yes if it is a lie. Answer Yes if it is a lie. Answer",
                    "<START>Say Yes or No from the Context!!!!!!!!!!!!!!!!!!!!",
                    "<START>cut off in the midd",
                ],
                ["length", "repetition", "length"],
            )
        ]
    )
    trace.path = tmp_path / "trace.jsonl"
    reply = calls.ask("edit", ["p"], n=3, shape=tagged(1, max_tokens=1024))[0]
    assert engine.requests[0].repetition == REPEAT_STOP
    assert calls.sample_items(reply, "edit") == ["Answer Yes if it is a lie.", "Say Yes or No from the Context!"]
    assert trace.counts == {"replies": 3, "replies_guided": 3, "replies_cut_repetition": 2, "replies_truncated": 1}
    events = [e for e in map(json.loads, trace.path.read_text().splitlines()) if "event" in e]
    cuts = [e for e in events if e["event"] == "reply_cut_repetition"]
    assert [e["reason"] for e in cuts] == ["repeated sentence", "repeated tail"]
    assert cuts[1]["finish"] == "repetition" and cuts[0]["dropped_chars"] > 0
    summary = reply_summary(trace.counts, trace.rejections, guided=True)
    assert summary["cut_repetition"] == 2 and "truncated=1 cut=2" in replies_line(summary)


def test_a_reply_the_engine_stopped_without_a_loop_to_cut_counts_as_truncated():
    calls, _, trace = calls_for([(["<START>Read it and"], ["repetition"])])
    assert calls.sample_items(calls.ask("edit", ["p"], shape=tagged(1))[0], "edit") == []
    assert trace.counts["replies_truncated"] == 1 and "replies_cut_repetition" not in trace.counts


def test_free_text_replies_are_cut_too():
    calls, engine, trace = calls_for(
        [(["Classify it as Yes or No. Classify it as Yes or No. Classify"], ["length"])], guided=False
    )
    reply = calls.ask("paraphrase", ["p"])[0]
    assert engine.requests[0].shape is None and engine.requests[0].repetition == REPEAT_STOP
    assert calls.parse(reply.text, "paraphrase", tagged=False) == ["Classify it as Yes or No."]
    assert trace.counts["replies_cut_repetition"] == 1


def test_tail_repeats_is_the_engine_stop_rule():
    ids = [5, 6] + [1, 2, 3, 4, 5, 6, 7, 8] * 2
    assert tail_repeats(ids, *REPEAT_STOP) and not tail_repeats(ids[:-1], *REPEAT_STOP)
    assert tail_repeats([9] * 16, *REPEAT_STOP) and not tail_repeats([9] * 15, *REPEAT_STOP)
    try:
        from vllm.sampling_params import RepetitionDetectionParams
        from vllm.v1.core.sched.utils import check_sequence_repetition
    except ImportError:
        return
    params = RepetitionDetectionParams(min_pattern_size=8, max_pattern_size=64, min_count=2)
    for seq in (ids, ids[:-1], [9] * 16, [9] * 15, list(range(40)) + list(range(30, 40)), [1, 2] * 40):
        assert tail_repeats(seq, *REPEAT_STOP) == check_sequence_repetition(seq, params)
