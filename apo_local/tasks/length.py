"""A prompt longer than the target's context: the example input's middle is cut to fit (``LengthLimit``), never
the instruction or the template; every cut is counted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from apo_local.tasks.examples import Example

if TYPE_CHECKING:
    from apo_local.tasks.task import Task

TRUNCATION_MARK = " [...] "


def cut_middle(text: str, keep: int) -> str:
    """``text`` with its middle replaced by TRUNCATION_MARK, keeping ``keep`` characters (head and tail)."""
    if keep >= len(text):
        return text
    tail = keep // 2
    return text[: keep - tail] + TRUNCATION_MARK + (text[len(text) - tail :] if tail else "")


@dataclass
class LengthLimit:
    """Truncation policy for over-long examples: never a crash, always counted.

    A prompt is the instruction, the fixed template sections and one example input. When the rendered
    prompt has more than ``max_tokens`` tokens, the *example input* is cut in the middle (its head and
    tail are kept, joined by " [...] "), to the longest cut that fits, found by bisection on characters.
    The instruction and the template are never cut. Each truncation calls ``on_truncate(example,
    tokens_before, tokens_after)`` (the run counts it as an ``example_truncated`` fault). If the prompt
    does not fit even with an empty input, it is left as is: the engine refuses it ("prompt too long")
    and the scorer counts it as a wrong prediction; a candidate instruction that long is rejected at
    admission.

    Token counts are only taken when needed: a prompt whose instruction-with-empty-input token count
    plus the input's UTF-8 byte length (a byte-level BPE token is at least one byte) plus a margin fits
    is passed through uncounted.
    """

    count_tokens: Callable[[Sequence[str]], list[int]]
    max_tokens: int
    on_truncate: Callable[[Example, int, int], None] | None = None
    slack: int = 8  # tokens allowed for merges across the input's boundaries
    _base: dict[str, int] = field(default_factory=dict, repr=False)

    def fit(self, task: Task, instruction: str, example: Example, text: str) -> str:
        if instruction not in self._base:
            if len(self._base) > 4096:
                self._base.clear()
            self._base[instruction] = self.count_tokens([task.template.render(instruction, "", task.labels)])[0]
        base = self._base[instruction]
        if (
            base + len(example.input.encode("utf-8")) + self.slack <= self.max_tokens
            or base + self.slack > self.max_tokens
        ):
            return text
        before = self.count_tokens([text])[0]
        if before <= self.max_tokens:
            return text
        render = lambda keep: task.template.render(instruction, cut_middle(example.input, keep), task.labels)  # noqa: E731
        lo, hi = 0, len(example.input) - 1  # characters kept: lo always fits (or is 0), hi+1 never does
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count_tokens([render(mid)])[0] <= self.max_tokens:
                lo = mid
            else:
                hi = mid - 1
        out = render(lo)
        if self.on_truncate is not None:
            self.on_truncate(example, before, self.count_tokens([out])[0])
        return out
