"""Prompt template: jinja2 text around the editable instruction (and demonstrations) and one example's input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jinja2
from jinja2 import meta

from apo_local.support.errors import ApoError
from apo_local.tasks.demos import OPEN, join_prompt, split_prompt
from apo_local.tasks.examples import first_line, read_text

VARIABLES = ("instruction", "input", "labels", "demonstrations")
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


class PromptTemplate:
    """A jinja2 template with the variables `instruction` (the only part optimized, ProTeGi-style),
    `input` (the example), `labels` (the label set joined as 'Yes / No') and, optionally,
    `demonstrations`: the prompt's few-shot examples (a list of ``{id, input, label}``, empty when the
    prompt has none; see ``tasks/demos.py``), e.g. ``{% for d in demonstrations %}...{% endfor %}``.
    A template without that slot renders exactly as before; a prompt with demonstrations needs it.

    Put the instruction (and the demonstrations) first: the engine's prefix cache then shares them
    across examples.
    """

    def __init__(self, source: str, origin: str = "<string>"):
        self.source, self.origin = source, origin
        try:
            tree = _ENV.parse(source)
        except jinja2.TemplateSyntaxError as e:
            raise ApoError(f"{origin} line {e.lineno}: template syntax error: {e.message}") from None
        used = meta.find_undeclared_variables(tree)
        for name in ("input", "instruction"):
            if name not in used:
                raise ApoError(f"{origin}: template has no {{{{ {name} }}}} placeholder")
        unknown = sorted(used.difference(VARIABLES))
        if unknown:
            raise ApoError(f"{origin}: unknown template variable '{unknown[0]}' (variables: {', '.join(VARIABLES)})")
        self._template = _ENV.from_string(tree)
        self.takes_demonstrations = "demonstrations" in used
        self.render("instruction", "input", ("A", "B"))  # surface render-time errors at load
        if self.takes_demonstrations:
            self.render(join_prompt("instruction", [{"id": "x", "input": "input", "label": "A"}]), "input", ("A", "B"))

    @classmethod
    def from_file(cls, path: str | Path) -> PromptTemplate:
        return cls(read_text(Path(path)), origin=str(path))

    @classmethod
    def from_string(cls, text: str, origin: str = "<string>") -> PromptTemplate:
        return cls(text, origin)

    def render(self, instruction: str, input: str, labels: Sequence[str] = ()) -> str:
        """``instruction`` is the prompt text: the instruction, then its demonstrations block if any."""
        if not isinstance(instruction, str):  # e.g. None from a library caller: one line, not a TypeError
            raise ApoError(
                f"{self.origin}: the instruction must be text, not {type(instruction).__name__} "
                "(a task's own is task.initial_instruction)"
            )
        demos: list[dict] = []
        if OPEN in instruction:
            instruction, demos = split_prompt(instruction)
            if demos and not self.takes_demonstrations:
                raise ApoError(
                    f"{self.origin}: the prompt has demonstrations but the template has no "
                    "{{ demonstrations }} slot"
                )
        try:
            return self._template.render(
                instruction=instruction, input=input, labels=" / ".join(labels), demonstrations=demos
            )
        except Exception as e:  # user template code: filters, attribute access, arithmetic
            raise ApoError(f"{self.origin}: cannot render the template ({first_line(e)})") from None

    def __repr__(self) -> str:
        return f"PromptTemplate(origin={self.origin!r})"
