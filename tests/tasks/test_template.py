"""PromptTemplate: validation, rendering and error messages."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apo_local.support.errors import ApoError
from apo_local.tasks import PromptTemplate

LIAR = "# Task\n{{ instruction }}\n\n# Output format\nAnswer {{ labels }}.\n\n# Prediction\nText: {{ input }}\nLabel:\n"


def error(text: str, origin: str = "t.jinja") -> str:
    with pytest.raises(ApoError) as info:
        PromptTemplate.from_string(text, origin)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_render():
    template = PromptTemplate.from_string(LIAR)
    prompt = template.render("Is it a lie?", "Statement: x", ("Yes", "No"))
    assert (
        prompt
        == "# Task\nIs it a lie?\n\n# Output format\nAnswer Yes / No.\n\n# Prediction\nText: Statement: x\nLabel:"
    )
    assert template.source == LIAR and template.origin == "<string>"


def test_from_file(tmp_path):
    path = tmp_path / "p.jinja"
    path.write_text("{{ instruction }} {{ input }}")
    template = PromptTemplate.from_file(path)
    assert template.origin == str(path) and template.render("a", "b") == "a b"
    with pytest.raises(ApoError, match="file not found"):
        PromptTemplate.from_file(tmp_path / "missing.jinja")
    path.write_bytes(b"{{ instruction }} \xff {{ input }}")
    with pytest.raises(ApoError, match=r"not UTF-8 text \(byte 0xff at offset 18\)"):
        PromptTemplate.from_file(path)


def test_missing_placeholders():
    assert error("{{ instruction }}") == "t.jinja: template has no {{ input }} placeholder"
    assert error("Text: {{ input }}") == "t.jinja: template has no {{ instruction }} placeholder"


def test_unknown_variable():
    assert error("{{ instruction }} {{ input }} {{ context }}") == (
        "t.jinja: unknown template variable 'context' (variables: instruction, input, labels, demonstrations)"
    )


def test_syntax_error_names_the_line():
    message = error("{{ instruction }}\n{{ input }}\n{% if %}")
    assert message.startswith("t.jinja line 3: template syntax error:")


def test_render_errors_surface_at_load():
    assert error("{{ instruction }} {{ input.missing }}").startswith("t.jinja: cannot render the template (")


def test_control_flow_is_allowed():
    template = PromptTemplate.from_string(
        "{{ instruction }}{% if labels %} [{{ labels }}]{% endif %}\n{{ input | trim }}"
    )
    assert template.render("Go", "  x  ") == "Go\nx"
    assert template.render("Go", "x", ["A", "B"]) == "Go [A / B]\nx"


@given(st.text(), st.text())
def test_render_keeps_any_input_verbatim(instruction, text):
    prompt = PromptTemplate.from_string(LIAR).render(instruction, text, ("Yes", "No"))
    assert text in prompt and instruction in prompt
