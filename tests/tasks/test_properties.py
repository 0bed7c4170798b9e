"""Property-based tests (hypothesis) on arbitrary text: tag parser, template renderer, data loaders,
the truncation policy. Complements tests/search/test_parsing.py and tests/tasks/test_template.py.

The contract everywhere: arbitrary user text either works or raises ``ApoError`` (one line); never
another exception.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apo_local.search.parsing import extract_tagged, is_degenerate
from apo_local.support.errors import ApoError
from apo_local.tasks import Example, PromptTemplate, load_examples
from apo_local.tasks.length import TRUNCATION_MARK, LengthLimit, cut_middle

LABELS = ("Yes", "No")
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=300, deadline=None)

# text a user file or a model reply might hold: any unicode, plus the characters that matter to the
# formats and grammars under test
_special = st.sampled_from(
    [
        "\n",
        "\r\n",
        "\r",
        '"',
        ",",
        "\\",
        "{",
        "}",
        "{{",
        "}}",
        "{%",
        "%}",
        "<START>",
        "<END>",
        "\t",
        "\x00",
        "\ufeff",
        "\u2028",
        "é",
        "😀",
        "  ",
    ]
)
messy_text = st.lists(st.one_of(st.text(max_size=20), _special), max_size=12).map("".join)


def _one_line(e: ApoError) -> None:
    assert "\n" not in str(e) and str(e).strip()


# -- tag parser ------------------------------------------------------------------------------------


@FAST
@given(st.lists(messy_text.filter(lambda s: s.strip()), min_size=1, max_size=5), messy_text)
def test_tagged_items_round_trip(items, prose):
    assume(
        not any(
            t in x.lower()
            for x in items + [prose]
            for t in ("<", ">", "start", "end", "`", '"', "'", "\u201c", "\u2018", "\u00ab", "*", "_")
        )
    )
    reply = prose + "".join(f"<START>{x}<END>{prose}" for x in items)
    result = extract_tagged(reply)
    expected = list(dict.fromkeys(x.strip() for x in items))
    assert result.items == expected


@FAST
@given(messy_text, st.sampled_from(["none", "whole"]))
def test_parser_on_arbitrary_replies(reply, fallback):
    result = extract_tagged(reply, fallback=fallback)
    assert all(item == item.strip() and item for item in result.items)
    assert len(set(result.items)) == len(result.items)
    if result.items == []:
        assert result.failures  # an unusable reply is always explained (and so counted)


@FAST
@given(messy_text, messy_text)
def test_is_degenerate_total(candidate, parent):
    reason = is_degenerate(candidate, parent)
    assert reason is None or isinstance(reason, str)
    if not candidate.strip():
        assert reason == "empty prompt"


# -- template renderer -----------------------------------------------------------------------------


@FAST
@given(messy_text)
def test_any_template_source_loads_or_raises_one_apo_error(source):
    try:
        template = PromptTemplate.from_string(source)
    except ApoError as e:
        _one_line(e)
        return
    out = template.render("INSTR", "INPUT", LABELS)
    assert isinstance(out, str)


@FAST
@given(messy_text, messy_text)
def test_example_text_is_never_evaluated_as_a_template(instruction, text):
    """An input holding jinja syntax is data: rendered verbatim, never executed (no template injection)."""
    template = PromptTemplate.from_string("{{ instruction }}\n---\n{{ input }}\n({{ labels }})")
    out = template.render(instruction, text, LABELS)
    assert out == f"{instruction}\n---\n{text}\n(Yes / No)"


# -- data loaders ----------------------------------------------------------------------------------


def _load(path: Path, **kw):
    return load_examples(path, split="train", input_column="text", label_column="label", **kw)


@SLOW
@given(st.lists(messy_text.filter(lambda s: s.strip()), min_size=1, max_size=6))
def test_jsonl_input_round_trips(texts):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "d.jsonl"
        path.write_text(
            "".join(json.dumps({"text": t, "label": LABELS[i % 2]}) + "\n" for i, t in enumerate(texts)),
            encoding="utf-8",
        )
        examples = _load(path, labels=LABELS)
    assert [ex.input for ex in examples] == texts
    assert [ex.label for ex in examples] == [LABELS[i % 2] for i in range(len(texts))]


@SLOW
@given(st.lists(messy_text.filter(lambda s: s.strip() and "\x00" not in s and "\r" not in s), min_size=1, max_size=6))
def test_csv_input_round_trips(texts):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"])
    for i, t in enumerate(texts):
        writer.writerow([t, LABELS[i % 2]])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "d.csv"
        path.write_text(buf.getvalue(), encoding="utf-8")
        try:
            examples = _load(path, labels=LABELS)
        except ApoError as e:  # refused with a reason is acceptable; silently changed text is not
            _one_line(e)
            return
    assert [ex.input for ex in examples] == texts


@SLOW
@given(st.binary(max_size=300), st.sampled_from(["d.jsonl", "d.csv", "d.parquet"]))
def test_arbitrary_bytes_load_or_raise_one_apo_error(data, name):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        try:
            examples = _load(path, labels=LABELS)
        except ApoError as e:
            _one_line(e)
            return
    assert all(isinstance(ex, Example) and ex.input.strip() and ex.label in LABELS for ex in examples)


@SLOW
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["text", "label", "id", "x"]),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(),
                st.floats(allow_nan=True),
                messy_text,
                st.lists(st.integers(), max_size=2),
            ),
        ),
        max_size=5,
    )
)
def test_arbitrary_json_records_load_or_raise_one_apo_error(records):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "d.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        try:
            examples = _load(path, labels=LABELS, label_map={"1": "Yes", "0": "No", "true": "Yes", "false": "No"})
        except ApoError as e:
            _one_line(e)
            return
    assert len(examples) == len(records)


# -- truncation policy (pure logic; the real tokenizer is tested in test_faults_e2e.py) ----------------


@FAST
@given(messy_text, st.integers(min_value=0, max_value=400))
def test_cut_middle_keeps_head_and_tail(text, keep):
    out = cut_middle(text, keep)
    if keep >= len(text):
        assert out == text
    else:
        head, tail = keep - keep // 2, keep // 2
        assert out.startswith(text[:head]) and out.endswith(text[len(text) - tail :] if tail else TRUNCATION_MARK)
        assert len(out) == keep + len(TRUNCATION_MARK)


@FAST
@given(messy_text, messy_text, st.integers(min_value=1, max_value=200))
def test_length_limit_fits_or_leaves_alone(instruction, text, limit):
    """With a byte-counting tokenizer: a prompt that can fit is made to fit, by cutting only the input."""
    template = PromptTemplate.from_string("{{ instruction }}|{{ input }}|")
    count = lambda prompts: [len(p.encode("utf-8")) for p in prompts]  # noqa: E731

    class _Task:
        labels = LABELS

    _Task.template = template
    cuts = []
    policy = LengthLimit(count, limit, lambda ex, a, b: cuts.append((a, b)))
    full = template.render(instruction, text, LABELS)
    out = policy.fit(_Task, instruction, Example("e", text, "Yes"), full)
    base = count([template.render(instruction, "", LABELS)])[0]
    if count([full])[0] <= limit or base + policy.slack > limit:
        assert out == full and not cuts
    else:
        assert count([out])[0] <= limit and out.startswith(instruction + "|")
        assert cuts == [(count([full])[0], count([out])[0])]
