"""How a generated reply becomes an answer (tasks/answers.py, scoring.Scorer): ABO's explicit final answer
line (a reply cut at its token budget is unparsed and counted) and the ProTeGi reference's YES-prefix reading
(scoring.parse: positive-prefix). No engine: a scripted one returns fixed replies."""

from __future__ import annotations

import pytest

from apo_local.engine import RoleEngine, Trace
from apo_local.engine.protocol import Generation
from apo_local.run.config import build_config
from apo_local.scoring import Scorer
from apo_local.search.proposers import target_answer
from apo_local.support.errors import ApoError
from apo_local.tasks import Example, load_task
from apo_local.tasks.answers import answer_reader, final_line_answer, positive_prefix_answer
from tests.helpers.scripted import ScriptedEngine

LIAR = load_task("liar")


def Scripted(replies: dict[str, tuple[str, str]]) -> ScriptedEngine:
    """The shared scripted engine, replying by example input: (text, finish reason)."""

    def reply(r):
        text, finish = next(v for k, v in replies.items() if k in str(r.prompt))
        return Generation((text,), 10, 10, finish_reasons=(finish,))

    return ScriptedEngine(reply=reply)


def _rows(*inputs):
    return [Example(f"r{i}", text, "No") for i, text in enumerate(inputs)]


# -- ABO: the explicit final answer line ----------------------------------------------------------


def test_the_answer_is_the_final_answer_line_not_a_label_word_in_the_work():
    read = lambda text: final_line_answer(LIAR, text)  # noqa: E731
    assert read("Step 1: The claim is about taxes.\nStep 2: It exaggerates.\nAnswer: Yes") == "Yes"
    # the reader this replaced took the last line naming a label: "yes" in the work made this a Yes
    assert read("No\nStep 2: yes, they often exaggerate") is None  # no answer line: unparsed
    assert read("Answer: No\nStep 3: yes, they often exaggerate") == "No"  # the answer line, not the later word
    assert read("Step 1: yes\nAnswer: Yes\nStep 2: checked again\nFinal answer: no.") == "No"  # the last answer line
    assert read("**Answer:** yes") == "Yes" and read("answer = NO") == "No"
    assert read("Answer:") is None and read("Answer: maybe") is None
    assert read("The answer is yes, I think") is None  # prose, not an answer line
    assert answer_reader(LIAR, "final-line")("Step 1: ok\nAnswer: No") == "No"


def test_a_worked_reply_cut_at_its_token_budget_is_unparsed_and_counted():
    engine = Scripted(
        {
            "cut short": ("Step 1: The statement says yes, they", "length"),
            "cut after": ("Step 1: read\nAnswer: Yes\nStep 2: and then", "length"),
            "finished": ("Step 1: read\nAnswer: Yes", "stop"),
        }
    )
    trace = Trace()
    scorer = Scorer(LIAR, RoleEngine(engine, "target", trace), "generate", 16, answer="final-line")
    rows = _rows("cut short", "cut after", "finished")
    preds = scorer.predict([("Follow these steps", ex) for ex in rows])
    assert [p.label for p in preds] == [None, None, "Yes"]  # a label word before the cut is no answer
    assert preds[0].error.startswith("reply cut at max_tokens (16)") and preds[2].error is None
    assert trace.faults == {"answer_truncated": 2}
    scorer.predict([("Follow these steps", ex) for ex in rows])  # remembered: asked and counted once
    assert len(engine.requests) == 3 and trace.faults == {"answer_truncated": 2}
    e = scorer.evaluate("Follow these steps", rows)
    assert e.errors == 2 and e.predicted_distribution == {"<none>": 2, "Yes": 1}


def test_a_cut_reply_is_read_as_usual_where_the_answer_comes_first():
    engine = Scripted({"row-x": ("Yes, because the", "length")})
    scorer = Scorer(LIAR, RoleEngine(engine, "target", Trace()), "generate", 4)  # the label named first
    assert scorer.predict([("p", _rows("row-x")[0])])[0].label == "Yes"


def test_abo_runs_read_the_final_line_and_others_the_configured_parse():
    assert target_answer(build_config({"search": {"proposer": "abo"}})).reading == "final-line"
    assert (
        target_answer(build_config({"search": {"proposer": "abo"}, "abo": {"answer": "logprobs"}})).reading == "label"
    )
    assert target_answer(build_config({})).reading == "label"
    ref = build_config({"scoring": {"mode": "generate", "parse": "positive-prefix"}})
    assert target_answer(ref).reading == "positive-prefix"


# -- the ProTeGi reference: Yes only if the reply starts with YES ----------------------------------


def test_positive_prefix_is_the_reference_reading():
    read = lambda text: positive_prefix_answer(LIAR, text)  # noqa: E731
    # LMOps predictors.BinaryPredictor: 1 if response.strip().upper().startswith('YES') else 0
    assert [read(t) for t in ("Yes", " yes.", "YES, it is", "\nYes\n")] == ["Yes"] * 4
    assert [read(t) for t in ("No", "no", "", "The answer is Yes", "Label: Yes", "I think yes")] == ["No"] * 6
    assert read("Yesterday's claim") == "Yes"  # a prefix test, as the reference's
    engine = Scripted({"row-yes": (" YES", "length"), "row-maybe": ("Maybe", "length"), "row-no": ("no", "stop")})
    scorer = Scorer(LIAR, RoleEngine(engine, "target", Trace()), "generate", 4, answer="positive-prefix")
    assert [p.label for p in scorer.predict([("p", ex) for ex in _rows("row-yes", "row-maybe", "row-no")])] == [
        "Yes",
        "No",
        "No",
    ]


def test_positive_prefix_needs_a_binary_task_with_a_positive_label():
    party = load_task("liar-party")
    with pytest.raises(ApoError, match="positive-prefix needs a binary classification task") as err:
        Scorer(party, RoleEngine(Scripted({}), "target", Trace()), "generate", 4, answer="positive-prefix")
    assert "\n" not in str(err.value)
    with pytest.raises(ApoError, match="unknown answer reading"):
        answer_reader(LIAR, "first-word")
