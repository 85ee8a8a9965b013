"""Datasets: items to evaluate, and their files (JSONL, CSV, YAML), read and written as streams.

An item is ``{id, input, messages, expected, metadata, source_trace_id}``: ``input`` holds the
template variables (``{"topic": "tides"}``), ``messages`` a whole chat (OpenAI shape) when the item is
a conversation rather than variables. Files may write an item in two shapes::

    {"id": "q1", "input": {"topic": "tides"}, "expected": "moon", "metadata": {"level": 2}}
    {"topic": "tides", "expected": "moon"}          # flat: every other key is a variable

``vars`` is accepted for ``input`` (promptfoo's name); an ``input`` that is a string becomes the
variable ``input``, a list becomes ``messages``. Items without an ``id`` are numbered by position
(``"1"``, ``"2"``, ...), so two runs of the same file pair up item by item.

CSV: one column per variable, plus the reserved columns ``id``, ``expected``, ``metadata`` and
``messages`` (JSON), ``source_trace_id``; cells are text (write JSONL or YAML for typed values).
YAML: a list of items, or a mapping with ``items:``. JSONL and CSV are read lazily, line by line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml

from pilothouse.config import load_yaml
from pilothouse.domain.datasets import DatasetError, DatasetItem, item_to_mapping
from pilothouse.domain.spreadsheet import escape_formula, unescape_formula

__all__ = [
    "FORMATS",
    "DatasetFormat",
    "format_of",
    "item_from_mapping",
    "read_items",
    "write_items",
]

DatasetFormat = Literal["jsonl", "csv", "yaml"]
FORMATS: tuple[DatasetFormat, ...] = ("jsonl", "csv", "yaml")
RESERVED = frozenset({"id", "input", "vars", "messages", "expected", "metadata", "source_trace_id"})
_SUFFIXES: dict[str, DatasetFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".yaml": "yaml",
    ".yml": "yaml",
}

MAX_DATASET_VALUES = 20_000_000  # values of a YAML dataset once aliases are followed
MAX_YAML_DATASET_BYTES = 64 * 1024 * 1024  # a YAML dataset is parsed whole; larger ones belong in JSONL
MAX_LINE_CHARS = 64 * 1024 * 1024  # a JSONL item or CSV line; a file of no newlines stops here


def _checked_messages(value: Any, where: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(m, Mapping) and "role" in m for m in value):
        raise DatasetError(f"{where}: 'messages' must be a list of {{role, content}} mappings")
    return tuple(dict(m) for m in value)


def item_from_mapping(data: Any, position: int, where: str = "item") -> DatasetItem:
    """An item from one parsed record (either shape); ``position`` (1-based) numbers it when it has
    no ``id``."""
    if not isinstance(data, Mapping):
        raise DatasetError(f"{where}: an item must be a mapping, not {type(data).__name__}")
    item_id = data.get("id")
    if item_id is None or item_id == "":
        item_id = str(position)
    elif not isinstance(item_id, str | int) or isinstance(item_id, bool):
        raise DatasetError(f"{where}: 'id' must be a string or an integer")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise DatasetError(f"{where}: 'metadata' must be a mapping")
    messages = None if data.get("messages") is None else _checked_messages(data["messages"], where)
    if "input" in data and "vars" in data:
        raise DatasetError(f"{where}: give 'input' or 'vars', not both")
    structured = "input" in data or "vars" in data
    raw = data.get("input", data.get("vars")) if structured else None
    if structured:
        if isinstance(raw, str):
            variables: dict[str, Any] = {"input": raw}
        elif isinstance(raw, list):
            if messages is not None:
                raise DatasetError(f"{where}: 'input' is a chat and 'messages' is given too")
            messages, variables = _checked_messages(raw, where), {}
        elif isinstance(raw, Mapping):
            variables = dict(raw)
        elif raw is None:
            variables = {}
        else:
            raise DatasetError(f"{where}: 'input' must be a mapping of variables, a string or messages")
        extra = sorted(set(data) - RESERVED)
        if extra:
            raise DatasetError(f"{where}: unknown key {extra[0]!r} next to 'input' (put it in 'input')")
    else:
        variables = {k: v for k, v in data.items() if k not in RESERVED}
    source = data.get("source_trace_id")
    return DatasetItem(
        id=str(item_id),
        input=variables,
        expected=data.get("expected"),
        metadata=dict(metadata),
        messages=messages,
        source_trace_id=str(source) if source else None,
    )


def format_of(path: Path, explicit: str | None = None) -> DatasetFormat:
    """The file format: ``explicit``, else from the suffix."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise DatasetError(f"unknown dataset format {explicit!r} (known: {', '.join(FORMATS)})")
        return explicit
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise DatasetError(f"{path}: cannot tell the format from the suffix (use .jsonl, .csv or .yaml)")
    return found


def read_items(path: Path, fmt: str | None = None) -> Iterator[DatasetItem]:
    """The items of a dataset file, one at a time (YAML files are parsed whole)."""
    kind = format_of(path, fmt)
    try:
        handle = path.open(encoding="utf-8", newline="" if kind == "csv" else None)
    except OSError as exc:
        raise DatasetError(f"cannot read the dataset {path}: {exc.strerror}") from None
    with handle:
        if kind == "jsonl":
            yield from _read_jsonl(handle, path)
        elif kind == "csv":
            yield from _read_csv(handle, path)
        else:
            yield from _read_yaml(handle, path)


def _read_jsonl(handle: TextIO, path: Path) -> Iterator[DatasetItem]:
    position = 0
    for number, line in enumerate(_bounded_lines(handle, path), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON: {exc}") from None
        position += 1
        yield item_from_mapping(data, position, f"{path}:{number}")


def _read_csv(handle: TextIO, path: Path) -> Iterator[DatasetItem]:
    reader = csv.DictReader(_bounded_lines(handle, path))
    for position, row in enumerate(reader, start=1):
        where = f"{path}:{reader.line_num}"
        if None in row:
            raise DatasetError(f"{where}: more cells than columns")
        record: dict[str, Any] = {k: unescape_formula(v) for k, v in row.items() if v is not None}
        for column in ("metadata", "messages"):
            cell = record.get(column)
            if cell is None or cell == "":
                record.pop(column, None)
                continue
            try:
                record[column] = json.loads(cell)
            except ValueError:
                raise DatasetError(f"{where}: column '{column}' must hold JSON") from None
        if record.get("expected") == "":
            record.pop("expected")
        yield item_from_mapping(record, position, where)


def _bounded_lines(handle: TextIO, path: Path) -> Iterator[str]:
    """The lines of a file, each read at most :data:`MAX_LINE_CHARS` at a time, so a file without
    newlines (``/dev/zero``) is refused instead of read whole into memory."""
    number = 0
    while line := handle.readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise DatasetError(f"{path}:{number}: a line longer than {MAX_LINE_CHARS // (1024 * 1024)} MiB")
        yield line


def _read_yaml(handle: TextIO, path: Path) -> Iterator[DatasetItem]:
    text = handle.read(MAX_YAML_DATASET_BYTES + 1)
    if len(text) > MAX_YAML_DATASET_BYTES:
        limit = MAX_YAML_DATASET_BYTES // (1024 * 1024)
        raise DatasetError(f"{path}: a YAML dataset larger than {limit} MiB (write it as JSONL)")
    try:
        data = load_yaml(text, str(path), max_values=MAX_DATASET_VALUES)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise DatasetError(f"{path}: not valid YAML: {reason}") from None
    if isinstance(data, Mapping) and "items" in data:
        data = data["items"]
    if data is None:
        return
    if not isinstance(data, list):
        raise DatasetError(f"{path}: a YAML dataset is a list of items (or a mapping with 'items')")
    for position, record in enumerate(data, start=1):
        yield item_from_mapping(record, position, f"{path}: item {position}")


def write_items(items: Iterable[DatasetItem], out: TextIO, fmt: DatasetFormat) -> int:
    """Write items to a text stream in a format; returns how many. CSV needs two passes over the
    items to know its columns, so ``items`` must be re-iterable (a list, or a store's reader) for it."""
    count = 0
    if fmt == "jsonl":
        for item in items:
            out.write(json.dumps(item_to_mapping(item), ensure_ascii=False, default=str) + "\n")
            count += 1
    elif fmt == "yaml":
        for item in items:
            chunk = yaml.safe_dump([_plain(item_to_mapping(item))], allow_unicode=True, sort_keys=False)
            out.write(chunk)
            count += 1
        if count == 0:
            out.write("[]\n")
    elif fmt == "csv":
        count = _write_csv(items, out)
    else:
        raise DatasetError(f"unknown dataset format {fmt!r}")
    return count


def _plain(value: Any) -> Any:
    # YAML's safe dumper knows dicts and lists only (not mapping proxies or tuples).
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _write_csv(items: Iterable[DatasetItem], out: TextIO) -> int:
    variables: dict[str, None] = {}
    has = {"expected": False, "metadata": False, "messages": False, "source_trace_id": False}
    for item in items:
        variables.update(dict.fromkeys(item.input))
        has["expected"] |= item.expected is not None
        has["metadata"] |= bool(item.metadata)
        has["messages"] |= item.messages is not None
        has["source_trace_id"] |= bool(item.source_trace_id)
    clashes = sorted(RESERVED & set(variables))
    if clashes:
        raise DatasetError(f"variable {clashes[0]!r} is a reserved CSV column; export JSONL or YAML")
    columns = ["id", *variables, *(name for name, present in has.items() if present)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for item in items:
        row = [item.id, *(_cell(item.input.get(name)) for name in variables)]
        if has["expected"]:
            row.append(_cell(item.expected))
        if has["metadata"]:
            row.append(json.dumps(dict(item.metadata), ensure_ascii=False) if item.metadata else "")
        if has["messages"]:
            messages = item.messages
            row.append(
                "" if messages is None else json.dumps([dict(m) for m in messages], ensure_ascii=False)
            )
        if has["source_trace_id"]:
            row.append(item.source_trace_id or "")
        writer.writerow([escape_formula(cell) for cell in row])
        count += 1
        if buffer.tell() > 1 << 16:
            out.write(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()
    out.write(buffer.getvalue())
    return count
