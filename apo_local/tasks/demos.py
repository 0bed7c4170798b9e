"""Few-shot demonstrations inside a prompt's text: the optimized section after the instruction.

A candidate prompt stays one string (it is what the search dedupes, caches and reports); its
demonstrations, when it has any, follow the instruction as a block of JSON lines::

    Decide whether the statement is a lie.

    <demonstrations>
    {"id": "train-12", "input": "Says the tax ...", "label": "Yes"}
    {"id": "train-907", "input": "...", "label": "No"}
    </demonstrations>

``split_prompt`` reads the block back and the template renders the demonstrations in its
``{{ demonstrations }}`` slot (a list of ``{id, input, label}``); a text without the block is the
instruction alone, exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from apo_local.support.errors import ApoError

OPEN, CLOSE = "<demonstrations>", "</demonstrations>"
_MARK = "\n" + OPEN + "\n"


def demo(example) -> dict:
    """An example (``tasks.Example``) as a demonstration record."""
    return {"id": example.id, "input": example.input, "label": example.label}


def join_prompt(instruction: str, demos: Sequence[dict]) -> str:
    """The prompt text of ``instruction`` with ``demos`` (the instruction alone when there are none)."""
    if not demos:
        return instruction
    lines = [
        json.dumps({"id": d.get("id"), "input": d["input"], "label": d["label"]}, ensure_ascii=False) for d in demos
    ]
    return instruction.rstrip() + "\n" + _MARK + "\n".join(lines) + "\n" + CLOSE


def split_prompt(text: str) -> tuple[str, list[dict]]:
    """(instruction, demonstrations) of a prompt text; a text without the block has none."""
    if not text.rstrip().endswith(CLOSE) or _MARK not in text:
        return text, []
    head, _, body = text.rpartition(_MARK)
    demos = []
    for n, line in enumerate(body.rstrip()[: -len(CLOSE)].splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ApoError(f"demonstration {n} of the prompt is not a JSON line ({exc.msg})") from None
        if not isinstance(d, dict) or not isinstance(d.get("input"), str) or not isinstance(d.get("label"), str):
            raise ApoError(f"demonstration {n} of the prompt needs string fields input and label")
        demos.append({"id": d.get("id"), "input": d["input"], "label": d["label"]})
    return head.rstrip("\n"), demos
