"""Robust parsing of optimizer-LLM replies that wrap items in ``<START>`` ... ``<END>``.

Small models reply badly, so the tag grammar is lenient:

* case-insensitive, spaces allowed inside the brackets: ``<start>``, ``< START >``;
* a markdown wrapper mirrored on both sides is eaten with the tag: ``**<START>**``, `` `<END>` ``;
* closing variants: ``<END>``, ``</END>``, ``<\\END>``, ``<END/>``, and ``</START>`` / ``<\\START>``;
  an escaped ``\\<START\\>`` is accepted too.

Walking the tags in order: an ``<END>`` closes the open item; a ``<START>`` while one is
open means the previous one was unclosed (it takes the text up to the new ``<START>``);
an unclosed ``<START>`` at the end takes the rest of the text; an ``<END>`` with nothing
open is ignored. Text outside tags is ignored. Every problem is recorded in ``failures``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from apo_local.support.errors import ApoError


@dataclass
class ParseResult:
    items: list[str]  # non-empty, stripped, de-duplicated in order
    failures: list[str] = field(default_factory=list)  # one short reason per problem
    fallback_used: bool = False


@lru_cache(maxsize=16)
def tag_re(start: str, end: str) -> re.Pattern[str]:
    names = []
    for tag in (start, end):
        m = re.fullmatch(r"\s*<\s*([^<>]+?)\s*>\s*", tag)
        if not m:
            raise ApoError(f"tag {tag!r} must look like <NAME>")
        names.append(re.escape(m.group(1).lstrip("/\\").strip()))  # "</ANS>" closes like "<END>"
    return re.compile(
        r"(?P<md>\*{1,3}|_{1,3}|`{1,3})?"
        r"(?P<esc>\\)?<[ \t]*(?P<slash>[/\\]?)[ \t]*(?:(?P<open>" + names[0] + r")|" + names[1] + r")[ \t]*/?[ \t]*"
        r"(?(esc)\\|\\?)>"  # an escaped \<START\> must be escaped on both sides
        r"(?(md)(?P=md))",
        re.IGNORECASE,
    )


_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "`": "`", "\u00ab": "\u00bb"}
_FENCE = re.compile(r"\A```(?:[\w+.-]*[ \t]*\n)?(.*?)```\Z", re.DOTALL)


def _clean(item: str) -> str:
    """Strip whitespace, enclosing code fences and enclosing matching quotes (repeatedly)."""
    prev = None
    while item != prev:
        prev = item
        item = item.strip()
        m = _FENCE.match(item)
        if m:
            item = m.group(1)
        elif len(item) >= 2 and _QUOTES.get(item[0]) == item[-1]:
            inner = item[1:-1]
            if item[0] not in inner and item[-1] not in inner:  # keep 'a' or 'b'
                item = inner
    return item


_PREFACE = re.compile(r"^(?:sure|okay|ok|certainly|absolutely|of course)\b", re.IGNORECASE)
_HERE = re.compile(r"^(?:here(?:'s| is| are)|below is)\b", re.IGNORECASE)
_LABEL = re.compile(
    r"\A[*_#\s]*(?:new|improved|revised|updated|better|final|rewritten|edited)?\s*prompt\s*[*_]*\s*:\s*[*_]*\s*",
    re.IGNORECASE,
)


def _strip_preface(text: str) -> str:
    """Drop an obvious preface line ("Here is the new prompt:") and a "New prompt:" label."""
    lines = text.strip().splitlines()
    if len(lines) > 1 and len(lines[0]) <= 120:
        first = lines[0].strip()
        colon, mentions = first.endswith(":"), "prompt" in first.lower()
        if _PREFACE.match(first) or (_HERE.match(first) and (colon or mentions)) or (colon and mentions):
            text = "\n".join(lines[1:])
    rest = _LABEL.sub("", text.strip(), count=1)
    return rest if rest.strip() else text


def extract_tagged(text: str, start: str = "<START>", end: str = "<END>", *, fallback: str = "none") -> ParseResult:
    """Extract the items between ``start`` and ``end`` tags (see module doc).

    ``fallback="whole"``: if the reply has no ``start`` tag at all, the whole reply (tags
    removed, a preface line dropped, cleaned) becomes the single item, with
    ``fallback_used=True`` and the failure "no tags; used whole reply".
    ``fallback="none"``: no items and the failure "no <START> tag".
    """
    if fallback not in ("none", "whole"):
        raise ApoError(f"fallback must be 'none' or 'whole', got {fallback!r}")
    text = text or ""
    tag = tag_re(start, end)
    s_name, e_name = start.strip(), end.strip()
    raw: list[str] = []
    failures: list[str] = []
    open_at: int | None = None
    saw_start = False
    for m in tag.finditer(text):
        if m.group("open") and not m.group("slash"):
            saw_start = True
            if open_at is not None:
                failures.append(f"unclosed {s_name}")
                raw.append(text[open_at : m.start()])
            open_at = m.end()
        elif open_at is None:
            failures.append(f"{e_name} without {s_name}")
        else:
            raw.append(text[open_at : m.start()])
            open_at = None
    if open_at is not None:
        failures.append(f"unclosed {s_name}")
        raw.append(text[open_at:])

    if not saw_start:
        if fallback == "whole":
            whole = _clean(_strip_preface(tag.sub("", text)))
            if whole:
                return ParseResult([whole], failures + ["no tags; used whole reply"], True)
            return ParseResult([], failures + [f"no {s_name} tag", "empty reply"])
        return ParseResult([], failures + [f"no {s_name} tag"])

    items: list[str] = []
    for r in raw:
        item = _clean(r)
        if not item:
            failures.append("empty item")
        elif item in items:
            failures.append("duplicate item")
        else:
            items.append(item)
    return ParseResult(items, failures)


def is_degenerate(candidate: str, parent: str) -> str | None:
    """Why a proposed prompt should be discarded, or None if it is usable."""
    if not candidate or not candidate.strip():
        return "empty prompt"
    if " ".join(candidate.split()) == " ".join(parent.split()):
        return "identical to parent"
    limit = 4 * len(parent) + 2000
    if len(candidate) > limit:
        return f"too long ({len(candidate)} chars > {limit})"
    return None
