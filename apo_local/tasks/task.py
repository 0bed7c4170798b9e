"""A task (label space, prompt template, initial instruction, metric, data splits), read from a task YAML."""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from apo_local.support.errors import ApoError
from apo_local.tasks.examples import FORMATS, Example, first_line, load_examples, read_text
from apo_local.tasks.judge import judge_metric
from apo_local.tasks.length import LengthLimit
from apo_local.tasks.metrics import Metric, get_metric, parse_label, parse_number
from apo_local.tasks.template import PromptTemplate

BUILTIN_DIR = Path(__file__).parent / "builtin"
KINDS = ("classification", "generation")
_KEYS = (
    "name",
    "kind",
    "labels",
    "positive_label",
    "metric",
    "template",
    "instruction",
    "instruction_text",
    "data",
    "answer_pattern",
    "judge",
)
_DATA_KEYS = ("format", "input_column", "label_column", "id_column", "splits", "label_map")


@dataclass(frozen=True)
class DataSpec:
    """Where a task's split files are and how their columns map onto examples."""

    splits: dict[str, Path]
    input_column: str
    label_column: str
    format: str | None = None
    id_column: str | None = None
    label_map: dict[str, str] = field(default_factory=dict)


@dataclass
class Task:
    name: str
    kind: str  # "classification" | "generation"
    labels: tuple[str, ...]  # classification label set (>= 2); () for generation
    template: PromptTemplate
    initial_instruction: str
    metric: Metric
    positive_label: str | None
    source: str  # path of the task YAML, or "<builtin:NAME>"
    data: DataSpec = field(repr=False)
    answer_pattern: re.Pattern | None = None  # where the answer is in a generated reply (default: all of it)
    _mapped: dict[str, dict[str, int]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _splits: dict[str, list[Example]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _length: LengthLimit | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def split_names(self) -> list[str]:
        return list(self.data.splits)

    def split(self, name: str) -> list[Example]:
        """The split's examples, loaded on first use and cached."""
        if name not in self._splits:
            path = self.data.splits.get(name)
            if path is None:
                raise ApoError(f"unknown split {name!r} of task {self.name} (splits: {', '.join(self.data.splits)})")
            examples = load_examples(
                path,
                split=name,
                format=self.data.format,
                input_column=self.data.input_column,
                label_column=self.data.label_column,
                id_column=self.data.id_column,
                label_map=self.data.label_map,
                labels=self.labels or None,
                mapped=self._mapped.setdefault(name, {}),
            )
            if not examples:
                raise ApoError(f"split {name!r} of task {self.name} is empty ({path})")
            self._splits[name] = examples
        return self._splits[name]

    def label_mapping(self, name: str) -> dict[str, int]:
        """Rows of a loaded split whose label was respelled to the task's label ({"yes -> Yes": rows}):
        labels match case-insensitively, after data.label_map."""
        return dict(self._mapped.get(name, {}))

    def parse_answer(self, text: str) -> str | None:
        """A generated reply -> the answer the metric scores, or None (unparsed).

        With ``answer_pattern`` the last match is the answer (its group ``answer``, else its first group,
        else the whole match); no match is unparsed. Then: classification -> the label named
        (``parse_label``); ``numeric_match`` -> the last number; other metrics -> the stripped text.
        """
        if self.answer_pattern is not None:
            match = next(reversed(list(self.answer_pattern.finditer(text))), None)
            if match is None:
                return None
            groups = match.groupdict()
            text = groups["answer"] if "answer" in groups else (match.group(1) if match.groups() else match.group(0))
            text = text or ""
        if self.kind == "classification":
            return parse_label(text, self.labels)
        if self.metric.name == "numeric_match":
            number = parse_number(text)
            return None if number is None else (str(int(number)) if number.is_integer() else repr(number))
        return text.strip() or None

    def check_split(
        self, name: str, *, min_size: int = 1, size_name: str = "the minimum", need_two_classes: bool = True
    ) -> list[Example]:
        """The split, after checking it has `min_size` examples and (classification) at least two classes."""
        examples = self.split(name)
        if len(examples) < min_size:
            raise ApoError(
                f"split {name!r} of task {self.name} has {len(examples)} examples, fewer than {size_name} of {min_size}"
            )
        classes = {example.label for example in examples}
        if need_two_classes and self.kind == "classification" and len(classes) < 2:
            raise ApoError(f"split {name!r} of task {self.name} has only one class ({classes.pop()!r})")
        return examples

    def render(self, instruction: str, example: Example) -> str:
        text = self.template.render(instruction, example.input, self.labels)
        return text if self._length is None else self._length.fit(self, instruction, example, text)

    @property
    def length_limit(self) -> LengthLimit | None:
        """The fit ``render`` applies (``limit_length``), or None."""
        return self._length

    def limit_length(
        self,
        count_tokens: Callable[[Sequence[str]], list[int]],
        max_tokens: int,
        on_truncate: Callable[[Example, int, int], None] | None = None,
    ) -> None:
        """From now on ``render`` fits every prompt into ``max_tokens`` (the target's context minus room
        for the answer) by cutting the middle of an over-long example input (see ``LengthLimit``)."""
        self._length = LengthLimit(count_tokens, max_tokens, on_truncate)

    def label_distribution(self, split: str) -> dict[str, int]:
        counts = Counter(example.label for example in self.split(split))
        return {label: counts[label] for label in self.labels} if self.labels else dict(counts)


def builtin_task_names() -> list[str]:
    return sorted(path.parent.name for path in BUILTIN_DIR.glob("*/task.yaml"))


def load_task(name_or_path: str | Path, *, overrides: dict[str, Any] | None = None) -> Task:
    """A built-in task by name, or a task YAML (or a folder holding task.yaml).

    `overrides` replace top-level YAML keys (`data` is merged key by key); None values are ignored.
    Relative paths, in the YAML and in overrides alike, are relative to the YAML's folder.
    """
    text = str(name_or_path)
    if text in builtin_task_names():
        path, source = BUILTIN_DIR / text / "task.yaml", f"<builtin:{text}>"
    else:
        path = Path(name_or_path)
        path = path / "task.yaml" if path.is_dir() else path
        if not path.exists() and path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
            raise ApoError(
                f"unknown task {text!r} (built-in tasks: {', '.join(builtin_task_names())}; or give a path to a task .yaml)"
            )
        source = str(path)
    doc = _apply_overrides(_read_yaml(path), overrides or {})
    return _build(doc, path, source)


class _Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans, so labels like Yes / No / on stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read_yaml(path: Path) -> dict:
    try:
        doc = yaml.load(read_text(path), Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ApoError(f"{path} line {mark.line + 1}: invalid YAML ({e.problem or e.context})") from None
    except yaml.YAMLError as e:
        raise ApoError(f"{path}: invalid YAML ({first_line(e)})") from None
    if not isinstance(doc, dict):
        raise ApoError(
            f"{path}: expected a mapping of task settings, got {type(doc).__name__ if doc is not None else 'nothing'}"
        )
    return doc


def _apply_overrides(doc: dict, overrides: dict[str, Any]) -> dict:
    doc = dict(doc)
    for key, value in overrides.items():
        if key not in _KEYS:
            raise ApoError(f"unknown task override {key!r} (keys: {', '.join(_KEYS)})")
        if value is None:
            continue
        if key == "data" and isinstance(value, dict) and isinstance(doc.get("data"), dict):
            value = {**doc["data"], **{k: v for k, v in value.items() if v is not None}}
        doc[key] = value
        if key in ("instruction", "instruction_text"):  # one replaces the other
            doc.pop("instruction_text" if key == "instruction" else "instruction", None)
    return doc


@dataclass
class _Section:
    """One YAML mapping (the top level, or `data`); errors name the file and the key."""

    doc: dict
    file: Path
    prefix: str = ""

    def error(self, key: str, message: str) -> ApoError:
        return ApoError(f"{self.file}: {self.prefix}{key}: {message}")

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.doc:
            if key not in allowed:
                raise ApoError(f"{self.file}: unknown key '{self.prefix}{key}' (keys: {', '.join(allowed)})")

    def get(self, key: str, kinds: tuple[type, ...] = (str,), required: bool = False) -> Any:
        """The value, type-checked; None if absent (or ApoError if required)."""
        value = self.doc.get(key)
        if value is None:
            if required:
                raise ApoError(f"{self.file}: missing required key '{self.prefix}{key}'")
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.error(key, f"expected {' or '.join(kind.__name__ for kind in kinds)}, got {value!r}")
        return value


def _build(doc: dict, path: Path, source: str) -> Task:
    top, folder = _Section(doc, path), path.parent
    top.check_keys(_KEYS)
    name = top.get("name", required=True)
    kind = top.get("kind") or "classification"
    if kind not in KINDS:
        raise top.error("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    labels = _labels(top, kind)
    positive_label = top.get("positive_label", (str, int))
    if positive_label is not None:
        positive_label = _canonical(str(positive_label), labels, top, "positive_label")
    metric_name = top.get("metric") or ("accuracy" if labels else "exact_match")
    sys.path.insert(0, str(folder))  # a custom "module:function" metric may live next to the YAML
    try:
        metric = (
            judge_metric(top.get("judge", (dict,)), folder, str(path))
            if metric_name == "judge"
            else get_metric(metric_name, positive_label=positive_label, labels=labels or None)
        )
    except ApoError as e:
        raise ApoError(f"{path}: {e}") from None
    finally:
        sys.path.remove(str(folder))

    template = PromptTemplate.from_file(folder / top.get("template", required=True))
    if (doc.get("instruction") is None) == (doc.get("instruction_text") is None):
        raise ApoError(f"{path}: give exactly one of 'instruction' (a file) and 'instruction_text'")
    if doc.get("instruction") is not None:
        instruction = read_text(folder / top.get("instruction")).strip()
    else:
        instruction = top.get("instruction_text").strip()
    if not instruction:
        raise ApoError(f"{path}: the initial instruction is empty")

    data = _data(_Section(top.get("data", (dict,), required=True), path, "data."), labels)
    pattern = top.get("answer_pattern")
    if pattern is not None:
        try:
            pattern = re.compile(pattern, re.IGNORECASE | re.DOTALL)
        except re.error as e:
            raise top.error("answer_pattern", f"invalid regular expression ({e})") from None
    return Task(name, kind, labels, template, instruction, metric, positive_label, source, data, pattern)


def _labels(top: _Section, kind: str) -> tuple[str, ...]:
    raw = top.get("labels", (list,), required=kind == "classification")
    if kind == "generation":
        if raw:
            raise top.error("labels", "only a classification task has labels")
        return ()
    labels: list[str] = []
    for label in raw:
        if isinstance(label, bool) or not isinstance(label, (str, int)) or not str(label).strip():
            raise top.error("labels", f"{label!r} is not a label (use non-empty strings)")
        if str(label).strip().casefold() in (seen.casefold() for seen in labels):
            raise top.error("labels", f"{label!r} is given twice")
        labels.append(str(label).strip())
    if len(labels) < 2:
        raise top.error("labels", f"a classification task needs at least two labels, got {labels}")
    return tuple(labels)


def _canonical(value: str, labels: tuple[str, ...], section: _Section, key: str) -> str:
    for label in labels:
        if label.casefold() == value.strip().casefold():
            return label
    raise section.error(
        key, f"{value!r} is not one of {', '.join(labels) or 'the labels (a generation task has none)'}"
    )


def _data(data: _Section, labels: tuple[str, ...]) -> DataSpec:
    data.check_keys(_DATA_KEYS)
    fmt = data.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise data.error("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    folder, splits = data.file.parent, {}
    for split, file in data.get("splits", (dict,), required=True).items():
        if not isinstance(split, str) or not isinstance(file, str):
            raise data.error("splits", f"expected split name: file, got {split!r}: {file!r}")
        splits[split] = folder / file
        if not splits[split].exists():
            raise data.error(f"splits.{split}", f"file not found: {splits[split]}")
    if not splits:
        raise data.error("splits", "no splits given")
    label_map = data.get("label_map", (dict,)) or {}
    if labels:
        for raw, label in label_map.items():
            _canonical(str(label), labels, data, f"label_map.{raw}")
    return DataSpec(
        splits=splits,
        input_column=data.get("input_column", required=True),
        label_column=data.get("label_column", required=True),
        format=fmt,
        id_column=data.get("id_column"),
        label_map=label_map,
    )
