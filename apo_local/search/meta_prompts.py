"""Meta-prompts: the templates the optimizer model is asked with (gradient, edit, paraphrase, ...).

Built-ins live in ``search/prompts/*.jinja``; a run config can point any of them at a user file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jinja2

from apo_local.support.errors import ApoError
from apo_local.tasks import Example

BUILTIN_DIR = Path(__file__).parent / "prompts"
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


class MetaPrompts:
    def __init__(self, overrides: dict[str, str | None] | None = None):
        self._templates: dict[str, jinja2.Template] = {}
        self._overrides = {k: v for k, v in (overrides or {}).items() if v}

    def render(self, name: str, **variables) -> str:
        if name not in self._templates:
            path = Path(self._overrides.get(name) or BUILTIN_DIR / f"{name}.jinja")
            if not path.is_file():
                raise ApoError(f"meta-prompt {name!r}: file {path} does not exist")
            try:
                self._templates[name] = _ENV.from_string(path.read_text(encoding="utf-8"))
            except jinja2.TemplateSyntaxError as exc:
                raise ApoError(f"{path} line {exc.lineno}: {exc.message}") from None
        try:
            return self._templates[name].render(**variables).strip()
        except jinja2.UndefinedError as exc:
            raise ApoError(f"meta-prompt {name!r}: {exc.message}") from None

    def errors(
        self, rows: Sequence[tuple[Example, str | None]], evaluated: bool = True, notes: Sequence[str] | None = None
    ) -> str:
        """The error block shown to the optimizer: input, gold label, the prompt's prediction.

        ``evaluated=False`` (``feedback.show_evaluation: false``): input and output only (``error_noeval``).
        ``notes``: one per row (the judge's reasons, metric judge), shown as ``judge``."""
        name = "error" if evaluated else "error_noeval"
        return "\n".join(
            self.render(
                name,
                number=i + 1,
                input=ex.input.strip(),
                label=ex.label,
                prediction=pred or "(no answer)",
                judge=notes[i] if notes else None,
            )
            + "\n"
            for i, (ex, pred) in enumerate(rows)
        )
