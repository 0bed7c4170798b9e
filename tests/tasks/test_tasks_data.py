"""Loading examples (JSONL / CSV / Parquet), task YAML files and the built-in liar task."""

import json
from pathlib import Path

import pytest

from apo_local.support.errors import ApoError
from apo_local.tasks import Example, builtin_task_names, load_examples, load_task

LABELS = ("Yes", "No")


def error(function, *args, **kwargs) -> str:
    """The ApoError message of the call; it must be a single line."""
    with pytest.raises(ApoError) as info:
        function(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def load(path, **kwargs):
    kwargs = {"split": "train", "input_column": "text", "label_column": "label", "labels": LABELS, **kwargs}
    return load_examples(path, **kwargs)


# --- the three formats ----------------------------------------------------------------------------


def test_jsonl_with_column_mapping_and_label_normalization(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl({"q": "a", "y": " yes "}, {"q": "b", "y": "NO"}) + "\n")
    assert load(path, input_column="q", label_column="y") == [
        Example("train-0", "a", "Yes"),
        Example("train-1", "b", "No"),
    ]


def test_csv_reads_every_cell_as_text(tmp_path):
    path = write(tmp_path, "d.csv", 'id,text,label\n007,"multi\nline",1\n8,1.0,0\n')
    examples = load(path, id_column="id", label_map={1: "Yes", 0: "no"})
    assert examples == [Example("007", "multi\nline", "Yes"), Example("8", "1.0", "No")]


def test_parquet(tmp_path):
    from datasets import Dataset

    path = tmp_path / "d.parquet"
    Dataset.from_dict({"text": ["a", "b"], "label": [1, 0], "uid": ["x", "y"]}).to_parquet(str(path))
    examples = load(path, id_column="uid", label_map={"1": "Yes", "0": "No"})
    assert examples == [Example("x", "a", "Yes"), Example("y", "b", "No")]


def test_explicit_format_overrides_the_extension(tmp_path):
    path = write(tmp_path, "d.txt", jsonl({"text": "a", "label": "Yes"}))
    assert load(path, format="jsonl") == [Example("train-0", "a", "Yes")]
    assert "set data.format" in error(load, path)
    assert "unknown data format 'xml'" in error(load, path, format="xml")


def test_json_numbers_and_booleans_go_through_label_map(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl({"text": "a", "label": 1.0}, {"text": "b", "label": False}))
    assert [e.label for e in load(path, label_map={1: "Yes", False: "No"})] == ["Yes", "No"]


def test_generation_labels_are_kept_as_text(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl({"text": "2+2", "label": " 4 "}))
    assert load(path, labels=None) == [Example("train-0", "2+2", "4")]


def test_utf8_bom_is_dropped(tmp_path):
    path = write(tmp_path, "d.csv", b"\xef\xbb\xbftext,label\na,Yes\n")
    assert load(path) == [Example("train-0", "a", "Yes")]


def test_empty_files_give_no_examples(tmp_path):
    assert load(write(tmp_path, "d.jsonl", "\n\n")) == []
    assert load(write(tmp_path, "d.csv", "text,label\n")) == []


# --- bad input --------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert error(load, tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: file not found"


def test_unreadable_file(tmp_path, monkeypatch):
    folder = tmp_path / "d.jsonl"
    folder.mkdir()
    assert error(load, folder).startswith(f"{folder}: cannot read")

    path = write(tmp_path, "locked.csv", "text,label\n")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert error(load, path) == f"{path}: cannot read (Permission denied)"


def test_not_utf8(tmp_path):
    path = write(tmp_path, "d.jsonl", b'{"text": "caf\xe9", "label": "Yes"}\n')
    assert error(load, path) == f"{path}: not UTF-8 text (byte 0xe9 at offset 13)"


def test_malformed_json_names_the_line(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl({"text": "a", "label": "Yes"}) + "\n" + '{"text": "b", "label": }\n')
    assert error(load, path).startswith(f"{path} line 3: malformed JSON")
    path = write(tmp_path, "e.jsonl", '["a", "Yes"]\n')
    assert error(load, path) == f"{path} line 1: expected a JSON object, got list"


@pytest.mark.parametrize(
    "name, content", [("d.jsonl", jsonl({"body": "a", "label": "Yes"})), ("d.csv", "body,label\na,Yes\n")]
)
def test_missing_column_lists_the_columns(tmp_path, name, content):
    path = write(tmp_path, name, content)
    assert error(load, path) == f"{path}: no column 'text' (columns: body, label)"
    assert (
        error(load, path, input_column="body", label_column="gold")
        == f"{path}: no column 'gold' (columns: body, label)"
    )


def test_empty_input_and_label_name_line_and_field(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl({"text": "a", "label": "Yes"}, {"text": "  ", "label": "No"}))
    assert error(load, path) == f"{path} line 2: empty 'text'"
    path = write(tmp_path, "e.jsonl", jsonl({"text": "a", "label": "Yes"}, {"text": "b"}))
    assert error(load, path) == f"{path} line 2: empty 'label'"
    path = write(tmp_path, "f.jsonl", jsonl({"text": "a", "label": ""}))
    assert error(load, path) == f"{path} line 1: empty 'label'"


def test_label_outside_the_label_set(tmp_path):
    path = write(tmp_path, "d.jsonl", "\n" + jsonl({"text": "a", "label": "Yes"}, {"text": "b", "label": "Maybe"}))
    assert error(load, path) == f"{path} line 3: label 'Maybe' is not one of Yes, No"
    path = write(tmp_path, "e.jsonl", jsonl({"text": "a", "label": 2}))
    assert error(load, path, label_map={1: "Yes", 0: "No"}) == f"{path} line 1: label '2' is not one of Yes, No"


def test_csv_line_numbers_count_the_header_and_multiline_fields(tmp_path):
    path = write(tmp_path, "d.csv", 'text,label\na,Yes\n"two\nlines",No\n\nc,\n')
    assert error(load, path) == f"{path} line 6: empty 'label'"
    path = write(tmp_path, "e.csv", "text,label\na,Yes\nb,Maybe\n")
    assert error(load, path) == f"{path} line 3: label 'Maybe' is not one of Yes, No"


def test_csv_shape_errors(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\na,Yes,extra\n")
    assert error(load, path) == f"{path} line 2: 3 fields, but the header has 2"
    path = write(tmp_path, "e.csv", "text,text\na,Yes\n")
    assert error(load, path) == f"{path} line 1: duplicate column 'text' in the header"


def test_parquet_errors_name_the_row(tmp_path):
    from datasets import Dataset

    path = tmp_path / "d.parquet"
    Dataset.from_dict({"text": ["a", None], "label": ["Yes", "No"]}).to_parquet(str(path))
    assert error(load, path) == f"{path} row 2: empty 'text'"
    bad = write(tmp_path, "bad.parquet", "not parquet at all")
    assert error(load, bad).startswith(f"{bad}: cannot read as parquet (")


def test_duplicate_ids(tmp_path):
    path = write(
        tmp_path, "d.jsonl", jsonl({"id": 1, "text": "a", "label": "Yes"}, {"id": 1, "text": "b", "label": "No"})
    )
    assert error(load, path, id_column="id") == f"{path} line 2: duplicate id '1' in column 'id'"


# --- task YAML ----------------------------------------------------------------------------------------

TEMPLATE = "{{ instruction }}\nText: {{ input }}\nAnswer ({{ labels }}):"


def make_task(folder: Path, yaml_text: str | None = None, rows=None) -> Path:
    rows = rows or [{"text": f"t{i}", "label": "Yes" if i % 2 else "No"} for i in range(6)]
    write(folder, "train.jsonl", jsonl(*rows))
    write(folder, "test.jsonl", jsonl(*rows[:2]))
    write(folder, "prompt.jinja", TEMPLATE)
    write(folder, "instruction.txt", "Is it true?\n")
    return write(
        folder,
        "task.yaml",
        yaml_text
        or """\
name: demo
kind: classification
labels: [Yes, No]
positive_label: yes
metric: f1
template: prompt.jinja
instruction: instruction.txt
data:
  input_column: text
  label_column: label
  splits: {train: train.jsonl, test: test.jsonl}
""",
    )


def test_load_task_from_yaml(tmp_path):
    task = load_task(str(make_task(tmp_path)))
    assert (task.name, task.kind, task.labels, task.positive_label) == ("demo", "classification", ("Yes", "No"), "Yes")
    assert task.initial_instruction == "Is it true?" and task.metric.name == "f1"
    assert task.source == str(tmp_path / "task.yaml") and task.split_names == ["train", "test"]
    assert len(task.split("train")) == 6 and task.split("train") is task.split("train")
    assert task.label_distribution("train") == {"Yes": 3, "No": 3}
    assert task.render("Do it.", task.split("test")[0]) == "Do it.\nText: t0\nAnswer (Yes / No):"
    assert load_task(tmp_path).name == "demo"  # a folder holding task.yaml


def test_overrides(tmp_path):
    path = make_task(tmp_path)
    task = load_task(str(path), overrides={"instruction_text": "New.", "metric": "accuracy", "name": None})
    assert (task.initial_instruction, task.metric.name, task.name) == ("New.", "accuracy", "demo")
    task = load_task(str(path), overrides={"data": {"splits": {"train": "test.jsonl"}}})
    assert len(task.split("train")) == 2
    assert error(load_task, str(path), overrides={"temperature": 1}).startswith("unknown task override 'temperature'")


def test_unknown_task_name():
    assert (
        error(load_task, "nope")
        == "unknown task 'nope' (built-in tasks: ethos, liar, liar-party; or give a path to a task .yaml)"
    )


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("name: demo\n", "name: demo\ncolour: red\n"), "unknown key 'colour'"),
        (("  input_column: text\n", "  input_column: text\n  sheet: 1\n"), "unknown key 'data.sheet'"),
        (("name: demo\n", ""), "missing required key 'name'"),
        (("  label_column: label\n", ""), "missing required key 'data.label_column'"),
        (
            ("labels: [Yes, No]", "labels: [Yes]"),
            "labels: a classification task needs at least two labels, got ['Yes']",
        ),
        (("labels: [Yes, No]", "labels: [Yes, yes]"), "labels: 'yes' is given twice"),
        (("positive_label: yes", "positive_label: Maybe"), "positive_label: 'Maybe' is not one of Yes, No"),
        (("positive_label: yes\n", ""), "metric 'f1' needs positive_label"),
        (("metric: f1", "metric: bleu"), "unknown metric 'bleu'"),
        (("kind: classification", "kind: ranking"), "kind: 'ranking' is not one of classification, generation"),
        (("template: prompt.jinja", "template: a: b"), "line 6: invalid YAML (mapping values are not allowed here)"),
        (("instruction: instruction.txt", "instruction_text: Hi"), None),
        (("instruction: instruction.txt\n", ""), "give exactly one of 'instruction' (a file) and 'instruction_text'"),
        (("test: test.jsonl", "test: gone.jsonl"), "data.splits.test: file not found"),
        (("  splits:", "  label_map: {1: Maybe}\n  splits:"), "data.label_map.1: 'Maybe' is not one of Yes, No"),
        (("template: prompt.jinja", "template: 3"), "template: expected str, got 3"),
    ],
)
def test_task_yaml_errors_name_the_file_and_key(tmp_path, edit, expected):
    path = make_task(tmp_path)
    path.write_text(path.read_text().replace(*edit))
    if expected is None:
        assert load_task(str(path)).initial_instruction == "Hi"
        return
    message = error(load_task, str(path))
    assert message.startswith(str(path)) and expected in message


def test_template_and_instruction_file_errors_name_their_file(tmp_path):
    path = make_task(tmp_path)
    write(tmp_path, "prompt.jinja", "{{ instruction }}")
    assert error(load_task, str(path)) == f"{tmp_path / 'prompt.jinja'}: template has no {{{{ input }}}} placeholder"
    write(tmp_path, "prompt.jinja", TEMPLATE)
    write(tmp_path, "instruction.txt", " \n")
    assert error(load_task, str(path)) == f"{path}: the initial instruction is empty"


def test_split_errors(tmp_path):
    task = load_task(str(make_task(tmp_path)))
    assert error(task.split, "dev") == "unknown split 'dev' of task demo (splits: train, test)"
    write(tmp_path, "test.jsonl", "\n")
    assert error(task.split, "test") == f"split 'test' of task demo is empty ({tmp_path / 'test.jsonl'})"
    assert error(task.check_split, "train", min_size=64, size_name="the minibatch") == (
        "split 'train' of task demo has 6 examples, fewer than the minibatch of 64"
    )


def test_single_class_split(tmp_path):
    task = load_task(str(make_task(tmp_path, rows=[{"text": "a", "label": "yes"}, {"text": "b", "label": "Yes"}])))
    assert error(task.check_split, "train") == "split 'train' of task demo has only one class ('Yes')"
    assert len(task.check_split("train", need_two_classes=False)) == 2


def test_custom_metric_next_to_the_yaml(tmp_path):
    path = make_task(tmp_path)
    write(tmp_path, "my_metric_mod.py", "def score(predictions, golds):\n    return 0.25\n")
    path.write_text(path.read_text().replace("metric: f1", "metric: my_metric_mod:score"))
    task = load_task(str(path))
    assert task.metric.compute(["Yes"], ["Yes"]) == {
        "my_metric_mod:score": 0.25,
        "accuracy": 1.0,
        "n": 1,
        "unparsed": 0,
    }


def test_generation_task(tmp_path):
    path = make_task(
        tmp_path,
        """\
name: arithmetic
kind: generation
template: prompt.jinja
instruction_text: Compute.
data: {input_column: text, label_column: label, splits: {train: train.jsonl}}
""",
        rows=[{"text": "1+1", "label": 2}, {"text": "2+2", "label": 4}],
    )
    task = load_task(str(path))
    assert (task.labels, task.metric.name, task.positive_label) == ((), "exact_match", None)
    assert [e.label for e in task.split("train")] == ["2", "4"]
    assert task.render("Compute.", task.split("train")[0]) == "Compute.\nText: 1+1\nAnswer ():"


# --- built-in liar ------------------------------------------------------------------------------------


def test_builtin_liar():
    assert "liar" in builtin_task_names()
    task = load_task("liar")
    assert (task.name, task.labels, task.positive_label, task.metric.name) == ("liar", ("Yes", "No"), "Yes", "f1")
    assert task.source == "<builtin:liar>"
    assert len(task.check_split("train", min_size=64)) == 3681 and len(task.split("test")) == 461
    assert task.label_distribution("train") == {"Yes": 1998, "No": 1683}
    assert task.label_distribution("test") == {"Yes": 250, "No": 211}
    prompt = task.render(task.initial_instruction, task.split("test")[0])
    assert prompt.startswith("# Task\nDetermine whether the Statement is a lie (Yes) or not (No)")
    assert prompt.endswith("\nLabel:") and task.split("test")[0].input in prompt
    assert task.split("train")[0].id == "train-0"


def test_builtin_ethos_is_protegis_split_with_its_licence():
    """ProTeGi's Ethos task: the clear rows of the shuffled copy, the first 200 as test; GPLv3 shipped beside."""
    task = load_task("ethos")
    assert (task.name, task.labels, task.positive_label, task.metric.name) == ("ethos", ("Yes", "No"), "Yes", "f1")
    assert task.label_distribution("train") == {"Yes": 192, "No": 248}
    assert task.label_distribution("test") == {"Yes": 94, "No": 106}
    assert not {ex.input for ex in task.split("train")} & {ex.input for ex in task.split("test")}
    assert task.initial_instruction == "Is the following text hate speech?"
    from apo_local.tasks.task import BUILTIN_DIR

    licence = (BUILTIN_DIR / "ethos" / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in licence and "Version 3" in licence
    source = (BUILTIN_DIR / "ethos" / "SOURCE.md").read_text()
    assert "Mollas" in source and "705258e118ce9611ebbd5ab2a4841b0066547293" in source


# --- answers and label spelling ------------------------------------------------------------------


def test_label_mapping_is_counted(tmp_path):
    rows = [{"text": f"t{i}", "label": "yes" if i % 2 else "No"} for i in range(6)]
    task = load_task(str(make_task(tmp_path, rows=rows)))
    assert [ex.label for ex in task.split("train")] == ["No", "Yes"] * 3
    assert task.label_mapping("train") == {"yes -> Yes": 3}
    assert task.label_mapping("test") == {}  # not loaded yet
    task.split("test")
    assert task.label_mapping("test") == {"yes -> Yes": 1}


GENERATION = """\
name: count
kind: generation
metric: {metric}
template: prompt.jinja
instruction_text: Count the objects.
{extra}data:
  input_column: text
  label_column: label
  splits: {{train: train.jsonl, test: test.jsonl}}
"""


def _generation_task(tmp_path, metric="numeric_match", extra=""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = [{"text": f"q{i}", "label": str(i)} for i in range(4)]
    return load_task(str(make_task(tmp_path, GENERATION.format(metric=metric, extra=extra), rows)))


def test_numeric_answers_take_the_last_number_and_count_unparsed(tmp_path):
    task = _generation_task(tmp_path)
    assert task.parse_answer("I have 4 stoves and 8 instruments, so 8.") == "8"
    assert task.parse_answer("about -2.5 cups") == "-2.5"
    assert task.parse_answer("no idea") is None
    assert task.metric.compute([task.parse_answer("so 8."), None], ["8", "3"]) == {
        "numeric_match": 0.5,
        "accuracy": 0.5,
        "n": 2,
        "unparsed": 1,
    }


def test_answer_pattern_picks_the_answer(tmp_path):
    task = _generation_task(tmp_path, extra="answer_pattern: 'answer is (\\S+)'\n")
    assert task.parse_answer("3 apples... The answer is 5. Or 7") == "5"
    assert task.parse_answer("The answer is 2; no wait, the answer is 6") == "6"  # the last match
    assert task.parse_answer("I think 9") is None  # no match: unparsed
    task = _generation_task(tmp_path / "x", metric="exact_match", extra="answer_pattern: 'A: (?P<answer>.*)$'\n")
    assert task.parse_answer("thinking...\nA: Paris") == "Paris"
    assert error(_generation_task, tmp_path / "y", extra="answer_pattern: '(unclosed'\n").endswith(
        "answer_pattern: invalid regular expression (missing ), unterminated subpattern at position 0)"
    )


def test_answer_pattern_on_a_classification_task(tmp_path):
    yaml_text = make_task(tmp_path).read_text()
    task = load_task(str(make_task(tmp_path, yaml_text + "answer_pattern: 'final: (\\w+)'\n")))
    assert task.parse_answer("No doubt... final: yes") == "Yes"
    assert task.parse_answer("Yes, but no final word") is None
