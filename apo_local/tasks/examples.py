"""Examples: labelled inputs, loaded from a JSONL, CSV or Parquet split file."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apo_local.support.errors import ApoError

FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Example:
    id: str  # "<split>-<row index>" unless an id column is mapped
    input: str
    label: str  # classification: a canonical label; generation: the target text


def first_line(error: BaseException) -> str:
    """A library exception's message cut to one line, for ApoError messages."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ApoError(f"{path}: file not found") from None
    except OSError as e:
        raise ApoError(f"{path}: cannot read ({e.strerror or first_line(e)})") from None


def read_text(path: Path) -> str:
    """A user file as UTF-8 text (a leading byte-order mark is dropped)."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise ApoError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def load_examples(
    path: str | Path,
    *,
    split: str,
    format: str | None = None,
    input_column: str,
    label_column: str,
    id_column: str | None = None,
    label_map: Mapping[Any, str] | None = None,
    labels: Sequence[str] | None = None,
    mapped: dict[str, int] | None = None,
) -> list[Example]:
    """Load one split. `labels` given (classification): each label is normalized to its canonical spelling
    (case-insensitively, after `label_map`); `mapped` (if given) counts the rows whose label was respelled,
    as {"raw -> canonical": rows}.

    Errors name the file and the 1-based line (JSONL; CSV counts its header as line 1) or row (Parquet).
    """
    path = Path(path)
    fmt = _format(path, format)
    if fmt == "parquet":
        read_bytes(path)
        numbers, data = None, _load_dataset(path, "parquet")
    else:
        text = read_text(path)
        if fmt == "jsonl":
            numbers, kwargs = _scan_jsonl(path, text), {}
        else:
            header, numbers = _scan_csv(path, text)
            kwargs = {"features": _string_features(header), "na_filter": False}
        if not numbers:
            return []
        data = _load_dataset(path, fmt, **kwargs)
        if len(data) != len(numbers):
            raise ApoError(f"{path}: found {len(numbers)} records but read {len(data)} rows; check the quoting")
    for column in (input_column, label_column, id_column):
        if column is not None and column not in data.column_names:
            raise ApoError(f"{path}: no column '{column}' (columns: {', '.join(data.column_names)})")

    label_map = {_cell(k).strip().casefold(): str(v).strip() for k, v in (label_map or {}).items()}
    canonical = {label.casefold(): label for label in labels} if labels is not None else None
    ids = data[id_column] if id_column else [None] * len(data)
    examples, seen = [], set()
    for i, (raw_id, raw_input, raw_label) in enumerate(zip(ids, data[input_column], data[label_column])):
        where = f"{path} line {numbers[i]}" if numbers else f"{path} row {i + 1}"
        input_text = _required(raw_input, input_column, where)
        raw = label = _required(raw_label, label_column, where).strip()
        label = label_map.get(label.casefold(), label)
        if canonical is not None:
            if label.casefold() not in canonical:
                raise ApoError(f"{where}: label {label!r} is not one of {', '.join(labels)}")
            label = canonical[label.casefold()]
        if mapped is not None and label != raw:
            mapped[f"{raw} -> {label}"] = mapped.get(f"{raw} -> {label}", 0) + 1
        example_id = _required(raw_id, id_column, where) if id_column else f"{split}-{i}"
        if example_id in seen:
            raise ApoError(f"{where}: duplicate id {example_id!r} in column '{id_column}'")
        seen.add(example_id)
        examples.append(Example(id=example_id, input=input_text, label=label))
    return examples


def _format(path: Path, format: str | None) -> str:
    if format is None:
        format = _EXTENSIONS.get(path.suffix.lower())
        if format is None:
            raise ApoError(
                f"{path}: cannot tell the format from the extension; set data.format to one of {', '.join(FORMATS)}"
            )
    elif format not in FORMATS:
        raise ApoError(f"{path}: unknown data format {format!r} (formats: {', '.join(FORMATS)})")
    return format


def _scan_jsonl(path: Path, text: str) -> list[int]:
    """Validate each line; return the line numbers of the records (blank lines are skipped)."""
    numbers = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ApoError(f"{path} line {number}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise ApoError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
        numbers.append(number)
    return numbers


def _scan_csv(path: Path, text: str) -> tuple[list[str], list[int]]:
    """Validate the field counts; return the header and the starting line number of each record."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header, numbers, start = None, [], 1
    try:
        for fields in reader:
            if not fields:  # blank line, skipped as pandas does
                pass
            elif header is None:
                header = fields
                duplicates = sorted({name for name in header if header.count(name) > 1})
                if duplicates:
                    raise ApoError(f"{path} line {start}: duplicate column '{duplicates[0]}' in the header")
            elif len(fields) != len(header):
                raise ApoError(f"{path} line {start}: {len(fields)} fields, but the header has {len(header)}")
            else:
                numbers.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise ApoError(f"{path} line {reader.line_num}: malformed CSV ({first_line(e)})") from None
    return header or [], numbers


def _string_features(columns: list[str]):
    from datasets import Features, Value

    return Features({column: Value("string") for column in columns})


def _load_dataset(path: Path, fmt: str, **kwargs):
    """Read through HF datasets, in memory; its cache goes to a temporary folder, not ~/.cache."""
    import datasets  # imported here: heavy, and only needed once data is read

    reader = {
        "jsonl": datasets.Dataset.from_json,
        "csv": datasets.Dataset.from_csv,
        "parquet": datasets.Dataset.from_parquet,
    }[fmt]
    bars_were_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory(prefix="apo-local-data-") as cache_dir:
            return reader(str(path), keep_in_memory=True, cache_dir=cache_dir, **kwargs)
    except Exception as e:  # pyarrow / pandas errors on malformed user files
        raise ApoError(f"{path}: cannot read as {fmt} ({first_line(e)})") from None
    finally:
        if not bars_were_disabled:
            datasets.enable_progress_bars()


def _cell(value: Any) -> str:
    """A cell as text: None -> "", 1.0 -> "1" (so numeric labels match label_map keys)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value)


def _required(value: Any, column: str, where: str) -> str:
    text = _cell(value)
    if not text.strip():
        raise ApoError(f"{where}: empty '{column}'")
    return text
