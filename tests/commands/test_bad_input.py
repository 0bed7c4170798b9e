"""Bad input through the CLI: one line on stderr, exit code 2, no engine started, nothing written.

Most cases call ``apo_local.commands.cli.main`` in this process (cheap, same code path as the console
script); a few run ``python -m apo_local.commands.cli`` in a subprocess to check the real process: exit
status 2, exactly one stderr line, no traceback. No case here may start an engine: the vLLM
backend's constructor is replaced by one that fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from apo_local.commands.cli import main
from apo_local.run.run_dir import RunDir
from apo_local.support.errors import ApoError

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = "{{ instruction }}\nText: {{ input }}\nAnswer ({{ labels }}):"
ROWS = [{"text": f"statement {i}", "label": "Yes" if i % 2 else "No"} for i in range(12)]
TASK = {
    "name": "demo",
    "kind": "classification",
    "labels": ["Yes", "No"],
    "metric": "accuracy",
    "template": "prompt.jinja",
    "instruction_text": "Is it a lie?",
    "data": {"input_column": "text", "label_column": "label", "splits": {"train": "train.jsonl", "test": "test.jsonl"}},
}
SMALL = [
    "--rounds",
    "1",
    "--beam-size",
    "1",
    "--minibatch-size",
    "4",
    "--test-limit",
    "4",
    "--budget",
    "8",
    "--batch-size",
    "4",
]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def make_task(
    folder: Path,
    task: dict | None = None,
    train: str | bytes | None = None,
    test: str | None = None,
    template: str = TEMPLATE,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompt.jinja").write_text(template)
    for name, content in (("train.jsonl", train), ("test.jsonl", test)):
        content = jsonl(ROWS) if content is None else content
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(task or TASK, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def no_engine(monkeypatch):
    """Bad input must be refused before any engine starts."""

    def boom(*args, **kwargs):
        raise AssertionError("an engine was started for bad input")

    monkeypatch.setattr("apo_local.engine.vllm_engine.VLLMEngine.__init__", boom)
    monkeypatch.setattr("apo_local.engine.hf_engine.TransformersEngine.__init__", boom)


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the console entry point in-process; (exit code, stderr). Asserts the one-line contract."""
    monkeypatch.setattr(sys, "argv", ["apo-local", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert info.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return info.value.code, lines[0][len("error: ") :]


def optimize_args(task: Path | str, out: Path, *extra: str) -> list[str]:
    return ["optimize", "--task", str(task), "--out", str(out), *SMALL, *extra]


# -- data files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "train, expected",
    [
        (b"\xff\xfe not utf-8\n", "train.jsonl: not UTF-8 text (byte 0xff at offset 0)"),
        (jsonl(ROWS[:3]) + '{"text": "x", "label": \n', "train.jsonl line 4: malformed JSON"),
        (jsonl(ROWS[:3]) + "[1, 2]\n", "train.jsonl line 4: expected a JSON object"),
        (jsonl(ROWS[:2] + [{"text": "  ", "label": "Yes"}]), "train.jsonl line 3: empty 'text'"),
        (jsonl(ROWS[:2] + [{"text": "x"}]), "train.jsonl line 3: empty 'label'"),
        (
            jsonl(ROWS[:2] + [{"text": "x", "label": "Maybe"}]),
            "train.jsonl line 3: label 'Maybe' is not one of Yes, No",
        ),
        (jsonl([{"body": "x", "label": "Yes"}]), "train.jsonl: no column 'text' (columns: body, label)"),
        ("\n\n", "split 'train' of task demo is empty"),
        (
            jsonl([{"text": f"s{i}", "label": "Yes"} for i in range(8)]),
            "split 'train' of task demo has only one class ('Yes')",
        ),
        (jsonl(ROWS[:3]), "split 'train' of task demo has 3 examples, fewer than search.minibatch_size of 4"),
    ],
    ids=[
        "not-utf8",
        "malformed-json",
        "not-an-object",
        "empty-input",
        "missing-label",
        "label-outside-set",
        "wrong-column",
        "empty-split",
        "single-class",
        "too-small-for-minibatch",
    ],
)
def test_bad_training_data(tmp_path, monkeypatch, capsys, train, expected):
    task = make_task(tmp_path / "task", train=train)
    out = tmp_path / "run"
    _, msg = cli(monkeypatch, capsys, *optimize_args(task, out))
    assert expected in msg
    assert not out.exists(), "bad input must not leave a run directory behind"


def test_csv_with_the_wrong_columns(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "task"
    make_task(folder)
    (folder / "train.csv").write_text("sentence,gold\nhello,Yes\n")
    (folder / "ragged.csv").write_text("text,label\nhello,Yes\nmore,No,extra\n")
    for name, expected in (
        ("train.csv", "train.csv: no column 'text' (columns: sentence, gold)"),
        ("ragged.csv", "ragged.csv line 3: 3 fields, but the header has 2"),
    ):
        spec = json.loads(json.dumps(TASK))
        spec["data"]["splits"]["train"] = name
        (folder / "task.yaml").write_text(yaml.safe_dump(spec))
        assert expected in cli(monkeypatch, capsys, *optimize_args(folder / "task.yaml", tmp_path / "run"))[1]


def test_missing_and_unreadable_data_file(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "task"
    make_task(folder)
    (folder / "train.jsonl").unlink()
    msg = cli(monkeypatch, capsys, *optimize_args(folder / "task.yaml", tmp_path / "run"))[1]
    assert "data.splits.train: file not found" in msg and str(folder / "train.jsonl") in msg
    # unreadable: a directory where the file should be (chmod 000 does not stop root)
    (folder / "train.jsonl").mkdir()
    msg = cli(monkeypatch, capsys, *optimize_args(folder / "task.yaml", tmp_path / "run"))[1]
    assert msg.startswith(f"{folder / 'train.jsonl'}: cannot read")
    if os.geteuid() != 0:
        (folder / "train.jsonl").rmdir()
        make_task(folder)
        (folder / "train.jsonl").chmod(0)
        msg = cli(monkeypatch, capsys, *optimize_args(folder / "task.yaml", tmp_path / "run"))[1]
        assert "cannot read (Permission denied)" in msg


def test_test_limit_beyond_the_test_split_is_capped_with_one_line(tmp_path, monkeypatch, capsys, caplog):
    """Like evaluate --limit: a test_limit larger than the test split uses the whole split and says so."""
    import logging

    from apo_local.run.config import build_config
    from apo_local.run.plan import RunPlan, cap_test_limit
    from apo_local.tasks import load_task

    task = load_task(make_task(tmp_path / "task", test=jsonl(ROWS[:3])))
    cfg = build_config(
        {"task": str(tmp_path / "task" / "task.yaml"), "evaluation": {"test_limit": 4}, "search": {"minibatch_size": 4}}
    )
    with caplog.at_level(logging.INFO, logger="apo_local"):
        capped = cap_test_limit(cfg, task)
    assert capped.evaluation.test_limit == 3 and cfg.evaluation.test_limit == 4
    assert [r.getMessage() for r in caplog.records] == [
        "evaluation.test_limit=4 is larger than the test split (3 examples): using all 3"
    ]
    RunPlan.build(capped, task)  # no error
    assert cap_test_limit(capped, task) is capped


def test_unknown_test_split(tmp_path, monkeypatch, capsys):
    task = make_task(tmp_path / "task", test=jsonl(ROWS[:3]))
    msg = cli(monkeypatch, capsys, *optimize_args(task, tmp_path / "run", "--test-split", "dev"))[1]
    assert msg == "unknown split 'dev' of task demo (splits: train, test)"


def test_train_limit_below_the_minibatch(tmp_path, monkeypatch, capsys):
    task = make_task(tmp_path / "task")
    msg = cli(monkeypatch, capsys, *optimize_args(task, tmp_path / "run", "--train-limit", "2"))[1]
    assert "train_limit (2) is smaller than search.minibatch_size (4)" in msg


# -- templates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{{ instruction }} Answer:", "template has no {{ input }} placeholder"),
        ("{{ instruction }} {{ input }} {{ shots }}", "unknown template variable 'shots'"),
        ("{{ instruction }} {{ input }", "line 1: template syntax error"),
    ],
)
def test_bad_template(tmp_path, monkeypatch, capsys, template, expected):
    task = make_task(tmp_path / "task", template=template)
    msg = cli(monkeypatch, capsys, *optimize_args(task, tmp_path / "run"))[1]
    assert msg.startswith(str(tmp_path / "task" / "prompt.jinja")) and expected in msg


# -- names: task, method, selector, models --------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--proposer", "opro"], "unknown proposer 'opro' (known: protegi"),
        (["--selector", "thompson"], "unknown selector 'thompson'"),
        (["--target-model", "no-such-alias"], "target.model: unknown model 'no-such-alias'"),
        (["--optimizer-model", "no-such-alias"], "optimizer.model: unknown model 'no-such-alias'"),
        (["--scoring-mode", "vibes"], "--scoring-mode (scoring.mode): Input should be 'logprobs' or 'generate'"),
        (
            ["--target-backend", "onnx"],
            "--target-backend (target.backend): Input should be 'vllm', 'transformers' or 'openai'",
        ),
        (
            ["--meta-prompts-edit", "/nonexistent/edit.jinja"],
            "meta_prompts.edit: file /nonexistent/edit.jinja does not exist",
        ),
    ],
)
def test_unknown_names(tmp_path, monkeypatch, capsys, args, expected):
    out = tmp_path / "run"
    msg = cli(monkeypatch, capsys, "optimize", "--out", out, *SMALL, "--train-limit", "40", *args)[1]
    assert expected in msg
    assert not out.exists()


def test_model_folder_missing_or_not_a_model(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-model"
    msg = cli(monkeypatch, capsys, "optimize", "--out", tmp_path / "run", *SMALL, "--target-model", missing)[1]
    assert msg == f"target.model: model folder {missing} does not exist"
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not a model")
    msg = cli(monkeypatch, capsys, "optimize", "--out", tmp_path / "run", *SMALL, "--optimizer-model", junk)[1]
    assert msg == f"optimizer.model: {junk} is not a model folder (no config.json)"
    (junk / "config.json").write_text("{}")
    msg = cli(monkeypatch, capsys, "evaluate", "--model", junk, "--limit", "2")[1]
    assert msg == f"{junk} is not a model folder (no *.safetensors or *.bin weights)"


# -- config file and flags ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"search": {"rounds": 1, "beem_size": 2}}, "search.beem_size: unknown key"),
        ({"colour": "red"}, "colour: unknown key"),
        ({"search": {"rounds": "many"}}, "search.rounds: Input should be a valid integer"),
        ({"search": {"rounds": 0}}, "search.rounds: Input should be greater than or equal to 1"),
        ({"search": {"beam_size": -1}}, "search.beam_size: Input should be greater than 0"),
        ({"search": {"minibatch_size": 0}}, "search.minibatch_size: Input should be greater than 0"),
        ({"selection": {"budget": 0}}, "selection.budget: Input should be greater than 0"),
        ({"selection": {"batch_size": -5}}, "selection.batch_size: Input should be greater than 0"),
        ({"evaluation": {"test_limit": 0}}, "evaluation.test_limit: Input should be greater than 0"),
        ({"budget": {"max_minutes": -1}}, "budget.max_minutes: Input should be greater than 0"),
        (
            {"target": {"gpu_memory_utilization": 1.5}},
            "target.gpu_memory_utilization: Input should be less than or equal to 1",
        ),
        ({"optimizer": {"max_tokens": 0}}, "optimizer.max_tokens: Input should be greater than 0"),
        ({"train_limit": -3}, "train_limit: Input should be greater than 0"),
        ({"search": ["rounds", 2]}, "search: Input should be a valid dictionary"),
    ],
)
def test_bad_config_file_names_the_key(tmp_path, monkeypatch, capsys, config, expected):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    msg = cli(monkeypatch, capsys, "optimize", "--config", path, "--out", tmp_path / "run")[1]
    assert msg.startswith(f"{path}: ") and expected in msg, msg


def test_config_file_problems(tmp_path, monkeypatch, capsys):
    path = tmp_path / "run.yaml"
    msg = cli(monkeypatch, capsys, "optimize", "--config", path, "--out", tmp_path / "run")[1]
    assert msg == f"config file {path} does not exist"
    path.write_text("search: [rounds: 2\n")
    assert "not valid YAML" in cli(monkeypatch, capsys, "optimize", "--config", path, "--out", tmp_path / "run")[1]
    path.write_text("- 1\n- 2\n")
    assert "expected a mapping" in cli(monkeypatch, capsys, "optimize", "--config", path, "--out", tmp_path / "run")[1]
    path.write_bytes(b"rounds: \xff\n")
    assert "not valid YAML" in cli(monkeypatch, capsys, "optimize", "--config", path, "--out", tmp_path / "run")[1]


@pytest.mark.parametrize(
    "flag, value, key",
    [
        ("--rounds", "0", "search.rounds"),
        ("--budget", "-1", "selection.budget"),
        ("--beam-size", "two", "search.beam_size"),
        ("--max-target-calls", "0", "budget.max_target_calls"),
        ("--optimizer-temperature", "-0.5", "optimizer.temperature"),
    ],
)
def test_bad_flag_names_the_key(tmp_path, monkeypatch, capsys, flag, value, key):
    msg = cli(monkeypatch, capsys, "optimize", "--out", tmp_path / "run", flag, value)[1]
    assert msg.startswith(f"{flag} ({key}): "), msg  # the flag the value came from, not "config:"


def test_missing_out(monkeypatch, capsys):
    assert cli(monkeypatch, capsys, "optimize", "--rounds", "1")[1] == "give --out DIR (the run directory to write)"


# -- the run directory ----------------------------------------------------------------------------


def test_out_dir_holding_another_run_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 1\n")
    (out / "results.json").write_text("{}")
    msg = cli(monkeypatch, capsys, "optimize", "--out", out, *SMALL)[1]
    assert msg == f"{out} already holds a run; use --resume to continue it or --overwrite to replace it"
    assert (out / "results.json").read_text() == "{}", "nothing of the old run may be lost"
    # any non-empty folder counts: never write a run into a folder of unrelated files
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    assert "already holds a run" in cli(monkeypatch, capsys, "optimize", "--out", other, *SMALL)[1]
    assert (other / "cat.jpg").read_bytes() == b"\xff\xd8"


def test_resume_of_a_folder_without_a_run(tmp_path, monkeypatch, capsys):
    msg = cli(monkeypatch, capsys, "optimize", "--resume", tmp_path / "empty")[1]
    assert msg == f"{tmp_path / 'empty'} holds no run to resume (no config.yaml)"
    assert not (tmp_path / "empty").exists()


def test_second_process_is_refused_by_the_lock(tmp_path):
    first = RunDir(tmp_path / "run")
    first.open("seed: 0\n")
    try:
        code = (
            "import sys\nfrom apo_local.run.run_dir import RunDir\nfrom apo_local.support.errors import ApoError\n"
            f"try:\n    RunDir({str(tmp_path / 'run')!r}).open('', resume=True)\n"
            "except ApoError as e:\n    print(e); sys.exit(2)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "is in use by another apo-local process" in proc.stdout
        with pytest.raises(ApoError, match="in use by another apo-local process"):
            RunDir(tmp_path / "run").open("", overwrite=True)  # --overwrite may not wipe a live run
        assert (tmp_path / "run" / "config.yaml").read_text() == "seed: 0\n"
    finally:
        first.close()
    again = RunDir(tmp_path / "run")
    again.open("", resume=True)  # free once the first one closed
    again.close()


def test_unwritable_out_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    msg = cli(monkeypatch, capsys, "optimize", "--out", blocker / "run", *SMALL, "--train-limit", "40")[1]
    assert str(blocker) in msg and ("Not a directory" in msg or "exists" in msg)


def test_run_directory_is_private(tmp_path):
    run = RunDir(tmp_path / "deep" / "run")
    run.open("seed: 0\n")
    run.close()
    assert (tmp_path / "deep" / "run").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "deep" / "run" / "rounds").stat().st_mode & 0o777 == 0o700
    for f in ("config.yaml", ".lock"):
        assert (tmp_path / "deep" / "run" / f).stat().st_mode & 0o777 == 0o600


# -- evaluate ------------------------------------------------------------------------------------


def test_evaluate_bad_input(tmp_path, monkeypatch, capsys):
    assert "unknown split 'dev'" in cli(monkeypatch, capsys, "evaluate", "--split", "dev")[1]
    assert (
        cli(monkeypatch, capsys, "evaluate", "--prompt", tmp_path / "p.txt")[1]
        == f"prompt file {tmp_path / 'p.txt'} does not exist"
    )
    (tmp_path / "p.txt").write_text("  \n")
    assert (
        cli(monkeypatch, capsys, "evaluate", "--prompt", tmp_path / "p.txt")[1]
        == f"prompt file {tmp_path / 'p.txt'} is empty"
    )
    (tmp_path / "p.txt").write_bytes(b"\xff\xfe")
    assert "not UTF-8" in cli(monkeypatch, capsys, "evaluate", "--prompt", tmp_path / "p.txt")[1]
    assert "unknown task" in cli(monkeypatch, capsys, "evaluate", "--task", "nope")[1]
    assert "unknown model 'nope'" in cli(monkeypatch, capsys, "evaluate", "--model", "nope")[1]


# -- the real process -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["optimize", "--out", "{tmp}/run", "--task", "nope"], "unknown task 'nope'"),
        (
            ["optimize", "--out", "{tmp}/run", "--rounds", "-1"],
            "--rounds (search.rounds): Input should be greater than or equal to 1",
        ),
        (["optimize", "--out", "{tmp}/run", "--target-model", "{tmp}/missing"], "does not exist"),
        (["evaluate", "--task", "{tmp}/task/task.yaml"], "label 'Maybe' is not one of Yes, No"),
        (["optimize", "--bogus-flag", "1"], "No such option '--bogus-flag'"),
        (["evaluate", "--limit", "0"], "Invalid value for '--limit'"),
    ],
)
def test_real_process_one_line_exit_2(tmp_path, args, expected):
    make_task(tmp_path / "task", test=jsonl(ROWS[:2] + [{"text": "x", "label": "Maybe"}]))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = {**os.environ, "APO_LOCAL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "apo_local.commands.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not (tmp_path / "run").exists()


def test_an_unexpected_error_shows_its_traceback_and_exit_1(monkeypatch, capsys):
    """A bug is not bad input: its traceback reaches the terminal (the exit path must not swallow it)."""
    import apo_local.commands.cli as cli_module

    def broken():
        raise ValueError("a bug in a table writer")

    monkeypatch.setattr(cli_module, "_run_cli", broken)
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert "Traceback" in err and "ValueError: a bug in a table writer" in err
