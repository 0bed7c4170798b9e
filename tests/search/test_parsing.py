"""Parsing of optimizer replies: hostile inputs and properties."""

import re

import pytest

from apo_local.search.parsing import ParseResult, extract_tagged, is_degenerate
from apo_local.support.errors import ApoError

try:
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None


def items(text, *args, **kw):
    return extract_tagged(text, *args, **kw).items


def test_multiple_items_and_prose_ignored():
    reply = "Sure! Reasons:\n<START>Too vague.<END>\nblah blah\n<START> Ignores sarcasm. <END> trailing prose"
    res = extract_tagged(reply)
    assert res == ParseResult(["Too vague.", "Ignores sarcasm."], [], False)


def test_no_tags():
    res = extract_tagged("The prompt is fine as it is.")
    assert res.items == [] and res.failures == ["no <START> tag"] and not res.fallback_used


def test_no_tags_whole_fallback_drops_preface():
    res = extract_tagged("Here is the improved prompt:\nDecide if the claim is a lie.\n{text}", fallback="whole")
    assert res.items == ["Decide if the claim is a lie.\n{text}"]
    assert res.fallback_used and res.failures == ["no tags; used whole reply"]
    assert items("New prompt: Answer yes or no.", fallback="whole") == ["Answer yes or no."]
    assert items('Sure!\n"Answer yes or no."', fallback="whole") == ["Answer yes or no."]
    # a first line that is part of the prompt is kept
    assert items("Classify the statement below:\n{text}", fallback="whole") == ["Classify the statement below:\n{text}"]
    res = extract_tagged("   \n ", fallback="whole")
    assert res.items == [] and not res.fallback_used and "no <START> tag" in res.failures


def test_fallback_not_used_when_tags_present():
    res = extract_tagged("<START>   <END> and prose", fallback="whole")
    assert res.items == [] and res.failures == ["empty item"] and not res.fallback_used


def test_unclosed_start_takes_rest():
    res = extract_tagged("<START> first <END>\n<START> second item\nwith two lines")
    assert res.items == ["first", "second item\nwith two lines"]
    assert res.failures == ["unclosed <START>"]


def test_unclosed_start_before_next_start():
    res = extract_tagged("<START> a <START> b <END>")
    assert res.items == ["a", "b"] and res.failures == ["unclosed <START>"]


def test_nested_tags():
    res = extract_tagged("<START> outer <START> inner <END> tail <END>")
    assert res.items == ["outer", "inner"]
    assert res.failures == ["unclosed <START>", "<END> without <START>"]


def test_empty_items_dropped():
    res = extract_tagged("<START><END><START> \n <END><START>ok<END><START>''<END>")
    assert res.items == ["ok"] and res.failures == ["empty item", "empty item", "empty item"]


def test_only_end():
    res = extract_tagged("text <END> more <END>")
    assert res.items == [] and res.failures == ["<END> without <START>"] * 2 + ["no <START> tag"]
    res = extract_tagged("text <END> more", fallback="whole")
    assert res.items == ["text  more"] and res.fallback_used


@pytest.mark.parametrize(
    "reply",
    [
        "<start>x<end>",
        "<Start>x</Start>",
        "< START >x< END >",
        "<START>x</END>",
        "<START>x<\\END>",
        "<START>x<END/>",
        "**<START>**x**<END>**",
        "**<START>** x <END>",
        "`<START>`x`<END>`",
        "__<START>__ x __<END>__",
        "\\<START\\>x\\<END\\>",
        "<START>\n```\nx\n```\n<END>",
        "<START>```text\nx```<END>",
        '<START> "x" <END>',
        "<START>\u201cx\u201d<END>",
    ],
)
def test_tag_variants(reply):
    assert items(reply) == ["x"]


def test_markdown_inside_item_kept():
    assert items("<START>**Bold** answer, then *italic*<END>") == ["**Bold** answer, then *italic*"]
    assert items("<START>'a' or 'b'<END>") == ["'a' or 'b'"]


def test_duplicates_removed_in_order():
    res = extract_tagged('<START>b<END><START>a<END><START> b <END><START>"a"<END>')
    assert res.items == ["b", "a"] and res.failures == ["duplicate item", "duplicate item"]


def test_unicode():
    assert items("<START>Réponds «oui» ou 日本語 🙂<END>") == ["Réponds «oui» ou 日本語 🙂"]


def test_junk_is_fast_and_safe():
    junk = ("lorem <ipsum> < STAR > <EN D> ** ` <<>> " * 4000) + "<" * 20000 + "<START" * 5000
    res = extract_tagged(junk + "<START>real<END>" + junk)
    assert res.items == ["real"]
    assert extract_tagged(junk).items == []


def test_custom_tags():
    assert items("<ANS> yes </ANS> <ANS>no</ANS>", "<ANS>", "</ANS>") == ["yes", "no"]
    assert items("<reason>r1<end>", start="<REASON>") == ["r1"]
    with pytest.raises(ApoError):
        extract_tagged("x", start="START")
    with pytest.raises(ApoError):
        extract_tagged("x", fallback="first")


def test_is_degenerate():
    parent = "Is this statement a lie?\n{text}"
    assert is_degenerate("", parent) == "empty prompt"
    assert is_degenerate("  \n", parent) == "empty prompt"
    assert is_degenerate("Is this  statement a lie? {text} ", parent) == "identical to parent"
    assert is_degenerate("x" * (4 * len(parent) + 2001), parent).startswith("too long")
    assert is_degenerate("x" * (4 * len(parent) + 2000), parent) is None
    assert is_degenerate("Decide whether the statement is a lie.\n{text}", parent) is None


TAGLIKE = re.compile(r"<\s*[/\\]?\s*(start|end)", re.IGNORECASE)
QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"

if given is not None:

    @settings(max_examples=300, deadline=None)
    @given(st.text(), st.sampled_from(["none", "whole"]))
    def test_never_raises_and_items_clean(text, fallback):
        res = extract_tagged(text, fallback=fallback)
        assert len(set(res.items)) == len(res.items)
        for it in res.items:
            assert it and it == it.strip()
        assert res.fallback_used == (
            fallback == "whole" and bool(res.items) and "no tags; used whole reply" in res.failures
        )

    tag_soup = st.lists(
        st.sampled_from(
            ["<START>", "<END>", "< start >", "</END>", "**<START>**", "x", " ", "\n", "y z", "`", '"', "<"]
        ),
        max_size=30,
    ).map("".join)

    @settings(max_examples=300, deadline=None)
    @given(tag_soup)
    def test_tag_soup(text):
        res = extract_tagged(text)
        for it in res.items:
            assert it and it == it.strip()
        n_tags = len(re.findall(r"<\s*(start|end)", text, re.IGNORECASE))
        assert len(res.items) <= n_tags

    @settings(max_examples=300, deadline=None)
    @given(st.text())
    def test_roundtrip(s):
        core = s.strip()
        assume(core and not TAGLIKE.search(s))
        assume(not (core[0] in QUOTES or core[-1] in QUOTES or core.startswith("```")))
        res = extract_tagged(f"<START>{s}<END>")
        assert res.items == [core] and res.failures == []
