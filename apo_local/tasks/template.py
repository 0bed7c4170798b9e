"""Prompt template: jinja2 text around the editable instruction and one example's input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jinja2
from jinja2 import meta

from apo_local.errors import ApoError
from apo_local.tasks.examples import first_line, read_text

VARIABLES = ("instruction", "input", "labels")
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


class PromptTemplate:
    """A jinja2 template with the variables `instruction` (the only part optimized, ProTeGi-style),
    `input` (the example) and `labels` (the label set joined as 'Yes / No').

    Put the instruction first: the engine's prefix cache then shares it across examples.
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
        self.render("instruction", "input", ("A", "B"))  # surface render-time errors at load

    @classmethod
    def from_file(cls, path: str | Path) -> PromptTemplate:
        return cls(read_text(Path(path)), origin=str(path))

    @classmethod
    def from_string(cls, text: str, origin: str = "<string>") -> PromptTemplate:
        return cls(text, origin)

    def render(self, instruction: str, input: str, labels: Sequence[str] = ()) -> str:
        try:
            return self._template.render(instruction=instruction, input=input, labels=" / ".join(labels))
        except Exception as e:  # user template code: filters, attribute access, arithmetic
            raise ApoError(f"{self.origin}: cannot render the template ({first_line(e)})") from None

    def __repr__(self) -> str:
        return f"PromptTemplate(origin={self.origin!r})"
