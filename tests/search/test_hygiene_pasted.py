"""Hygiene's ``pastes examples`` rule: an edit that pastes the minibatch rows the optimizer was shown into the
instruction is rejected, counted and logged under its own rule name; instructions that merely talk about
labels, inputs or predictions pass."""

from __future__ import annotations

import json

import pytest

from apo_local.engine import Trace
from apo_local.search.admission import Admission
from apo_local.search.hygiene import COPY_SPAN, Hygiene, rule, words
from apo_local.search.state import Candidate, Status
from apo_local.search.streams import Streams
from apo_local.tasks import load_task

PARENT = "Determine whether the Statement is a lie (Yes) or not (No) based on the Context and other information."


@pytest.fixture(scope="module")
def liar():
    return load_task("liar")


@pytest.fixture(scope="module")
def hygiene(liar):
    return Hygiene([ex.input for ex in liar.split("train")], liar.labels)


def statement(liar, i: int) -> str:
    """The statement line of training row ``i`` (what a small optimizer copies from the error examples)."""
    return liar.split("train")[i].input.split("\n")[0].removeprefix("Statement: ")


@pytest.mark.parametrize(
    "paste",
    [
        'Input: "{s}" Label: Yes Prediction: No',
        'Text: "{s}"\nLabel: Yes\nPrediction: No',
        "Example 1\nText: {s}\nLabel: No\nPrediction: Yes",
        'label: "No", prediction: "Yes"',
        "Correct label: Yes\nIts answer: No",
    ],
)
def test_a_pasted_error_example_is_rejected_with_its_own_rule(liar, hygiene, paste):
    text = f"{PARENT}\n\nFor example:\n{paste.format(s=statement(liar, 3)[:60])}"
    reason = hygiene.reason(text, PARENT)
    assert rule(reason) == "pastes examples", reason


@pytest.mark.parametrize(
    "paste",
    [
        'Input: "The senator voted against the bill twice last year" Label: Yes',
        "Text: The senator voted against the bill twice last year.\nLabel: No",
    ],
)
def test_a_pasted_input_and_label_row_is_rejected(hygiene, paste):
    assert hygiene.pasted_example(paste) == "an Input/Label row"
    assert rule(hygiene.reason(f"{PARENT}\n{paste}", PARENT)) == "pastes examples"


def test_a_long_copied_span_inside_a_long_instruction_is_rejected(liar, hygiene):
    """A pasted statement of 12+ words in an instruction of many more words: under copy_overlap, still pasted."""
    row = next(s for i in range(40) if len(words(s := statement(liar, i))) >= COPY_SPAN + 2)
    text = (
        f"{PARENT} Look closely at who says it, what office they hold, which party they belong to and where "
        f"the claim was made, then weigh whether the wording exaggerates numbers, dates or votes. Claims such "
        f"as {row} deserve extra care. Answer Yes or No."
    )
    assert hygiene.copied_share(text) <= hygiene.copy_overlap  # the older rule lets it through
    reason = hygiene.reason(text, PARENT)
    assert rule(reason) == "pastes examples" and "words in a row from a training input" in reason
    short = " ".join(words(row)[: COPY_SPAN - 1])  # one word under the span: a quote, not a paste
    assert hygiene.copied_span(f"Note that {short} may matter.") < COPY_SPAN


@pytest.mark.parametrize(
    "text",
    [
        PARENT,
        "Read the text and give the label: Yes if the statement is a lie, No otherwise.",
        "Label the statement. The label is Yes when it is false, else No; the prediction must be one word.",
        "Compare your prediction with the label you would expect from a fact checker: answer Yes or No.",
        "Input: a statement with its speaker and context. Output: Yes if it is a lie, otherwise No.",
        "Use the Context to judge. Answer with the label Yes or No; do not explain the label.",
        "Follow these steps:\n1. Read the statement.\n2. Answer Yes or No.\n\nDemonstration:\n"
        'Text: "Says the Annies List political group supports third-trimester abortions on demand."\n'
        "Label: Yes",
    ],
)
def test_instructions_that_mention_labels_or_inputs_pass(hygiene, text):
    assert hygiene.reason(text, PARENT) is None


def test_a_parent_that_holds_example_rows_lets_its_children_keep_them(hygiene):
    few_shot = f'{PARENT}\nText: "The senator voted against the bill twice last year"\nLabel: Yes'
    assert rule(hygiene.reason(few_shot, PARENT)) == "pastes examples"
    assert hygiene.reason(few_shot + "\nThink about the speaker's record.", few_shot) is None


def test_labels_other_than_the_tasks_are_still_label_words():
    h = Hygiene([], ["positive", "negative"])
    assert h.pasted_example("Label: positive Prediction: negative") == "a Label/Prediction pair"
    assert h.pasted_example("Label: Yes Prediction: No") is None  # not this task's labels
    assert Hygiene([], []).pasted_example("Label: 4.5 Prediction: 2") == "a Label/Prediction pair"


class Target:
    max_model_len = 4096

    def count_tokens(self, prompts):
        return [len(p.split()) for p in prompts]


def test_admission_counts_and_logs_the_rejection(liar, hygiene, tmp_path):
    trace = Trace(tmp_path / "trace.jsonl")
    admission = Admission(liar, Target(), trace, max_expansion=4, hygiene=hygiene)
    parent = Candidate(PARENT, 0, "initial", status=Status.KEPT)
    pasted = f'{PARENT}\nInput: "{statement(liar, 5)[:50]}" Label: Yes Prediction: No'
    fine = "Decide whether the Statement is a lie (Yes) or not (No); weigh the speaker's record."
    out = admission.admit_and_cap(
        [Candidate(t, 1, "edit", parent=parent.id) for t in (pasted, fine)], [parent], Streams(0, 1)
    )
    assert [c.status for c in out] == [Status.REJECTED, Status.NEW]
    assert trace.rejections["pastes examples"] == 1 and trace.counts["proposals_accepted"] == 1
    events = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    events = [e for e in events if e.get("event") == "candidate_rejected"]
    assert [e["rule"] for e in events] == ["pastes examples"] and events[0]["reason"].startswith("pastes examples (")


def test_a_few_shot_prompts_demonstrations_are_not_pasted_examples(liar, hygiene):
    """The fewshot proposers put training rows in a ``<demonstrations>`` block on purpose; the instruction above it
    is still checked."""
    from apo_local.tasks.demos import demo, join_prompt

    demos = [demo(ex) for ex in liar.split("train")[:3]]
    assert hygiene.reason(join_prompt(PARENT, demos), PARENT) is None
    pasted = f'{PARENT}\nInput: "{statement(liar, 5)[:50]}" Label: Yes Prediction: No'
    assert rule(hygiene.reason(join_prompt(pasted, demos), PARENT)) == "pastes examples"
