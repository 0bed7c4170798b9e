"""The README's library examples (and the runner's docstring example) run as written.

The unit tests run them with a stand-in engine in place of the model (the code around the engine: config,
preset, result attributes, the task's instruction); the engine test runs them exactly as written on the
embedded model."""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path

import pytest

import apo_local.run.optimize as O
from tests.helpers.stand_in import StandIn, use_stand_in

ROOT = Path(__file__).resolve().parents[2]


def library_examples() -> list[str]:
    """The python blocks of the README's "Library use" section, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Library use\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def runner_example() -> str:
    doc = O.__doc__.split("\n\n")[1]  # the docstring's second paragraph: the example
    return textwrap.dedent(doc)


def test_the_readme_shows_the_selected_prompt_a_small_preset_and_the_task_instruction():
    optimize_block, scoring_block = library_examples()
    assert "result.selected_prompt" in optimize_block and "best_prompt" not in optimize_block
    assert 'preset="smoke"' in optimize_block
    assert "task.initial_instruction" in scoring_block
    assert "result.selected_prompt" in runner_example() and 'preset="smoke"' in runner_example()


@pytest.fixture(autouse=True)
def logger_restored():
    """``apo.show_progress()`` in an example must not change logging for the tests after it."""
    logger = logging.getLogger("apo_local")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def _stand_in(monkeypatch) -> StandIn:
    engine = use_stand_in(monkeypatch)
    monkeypatch.setattr("apo_local.engine.load_engine", lambda *a, **k: engine)
    return engine


@pytest.mark.parametrize("which", ["optimize", "scoring", "runner"])
def test_the_examples_run_as_written_around_a_stand_in_engine(which, tmp_path, monkeypatch, capsys):
    _stand_in(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APO_LOCAL_CACHE_DIR", str(tmp_path / "cache"))
    code = {"optimize": library_examples()[0], "scoring": library_examples()[1], "runner": runner_example()}[which]
    exec(compile(code, f"README {which} example", "exec"), {})
    out = capsys.readouterr().out
    assert out.strip(), "the example prints its result"
    if which != "scoring":
        run = tmp_path / "runs"
        assert any(run.glob("*/results.json"))


@pytest.mark.engine
def test_the_examples_run_as_written_on_the_embedded_model(engine, tmp_path, monkeypatch, capsys):
    """Exactly as written (smoke preset, the embedded model): the whole library path. The runner's docstring
    example (the same smoke search) runs around the stand-in only, to keep this to one search."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APO_LOCAL_CACHE_DIR", str(tmp_path / "cache"))
    for name, code in (("optimize", library_examples()[0]), ("scoring", library_examples()[1])):
        exec(compile(code, f"README {name} example", "exec"), {})
        assert capsys.readouterr().out.strip(), name
    assert (tmp_path / "runs" / "lib-demo" / "results.json").is_file()


def test_no_instruction_is_one_error_line_naming_the_template():
    import apo_local as apo
    from apo_local.tasks import load_task

    task = load_task("liar")
    with pytest.raises(
        apo.ApoError,
        match=r"template.jinja: the instruction must be text, not NoneType \(a task's "
        r"own is task.initial_instruction\)",
    ):
        task.template.render(None, "some input", task.labels)
