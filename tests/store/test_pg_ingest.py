"""Issue 26 item 2: PostgreSQL ingest at the SQLite default's speed. The writer computes a span's search
vector itself (PostgreSQL's text parser cost ~10x the rest of a span's insert) and sends it in binary;
it must hold what PostgreSQL's own ``to_tsvector('simple', ...)`` made of the same words, so that the
searches (``to_tsquery('simple', ...)``) find what they found before."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from pilothouse.domain.queries import TraceQuery
from pilothouse.domain.traces import ObservationKind, SpanRecord, TraceAttributes, Usage
from pilothouse.store.engine import make_engine
from pilothouse.store.rows import pg_binary_hist
from pilothouse.store.search import _WORD, PG_TRACE_DOCUMENT, search_document
from pilothouse.store.sql import SqlStore, pg_text_array
from tests.conftest import _clean
from tests.store.test_migrations import _migrate
from tests.store.test_store import T0, rec, sid, tid

TEXTS = [
    "Hello, World! hello WORLD",  # case and repeats
    "foo_bar sim-1 1.5e3 ABC123 x 007 0x1F v2 2E10",  # what splits a word, numbers of every shape
    "Straße ÉCOLE naïve 東京タワー Ωmega ПРИВЕТ",  # non-ASCII: the regular expression's path
    "a" * 2047 + " " + "b" * 2048 + " kept",  # PostgreSQL keeps no lexeme over 2,047 bytes
    "é" * 1023 + " " + "ü" * 1024,  # the same limit in bytes, not characters
    "",
    "   ...   ",  # no word at all
]


@pytest.fixture
def pg_store(pg_server: str) -> Iterator[SqlStore]:
    store = SqlStore.from_url(pg_server)
    _clean(store)
    yield store
    store.close()


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "insert"])
def test_the_writers_vector_is_what_postgresql_made_of_the_words(pg_store: SqlStore, copy: bool) -> None:
    pg_store.copy_spans = copy
    records = [
        rec(tid(i + 1), sid(1), name="span", input=text, output=None, metadata={"k": f"v{i}"})
        for i, text in enumerate(TEXTS)
    ]
    pg_store.write_spans(records)
    with pg_store.engine.connect() as conn:
        for i, record in enumerate(records):
            words = " ".join(_WORD.findall(search_document(record)))  # what PostgreSQL parsed before
            stored, expected = conn.exec_driver_sql(
                "SELECT s.search::text, strip(to_tsvector('simple', %s))::text "
                "FROM spans s JOIN traces t ON t.pk = s.trace_pk WHERE t.id = %s",
                (words, tid(i + 1)),
            ).one()
            assert stored == expected, TEXTS[i][:40]


def test_searches_find_spans_by_every_kind_of_word(pg_store: SqlStore) -> None:
    pg_store.write_spans([rec(tid(i + 1), sid(1), name="span", input=text) for i, text in enumerate(TEXTS)])

    def found(search: str) -> list[str]:
        return [s.trace.id for s in pg_store.list_traces("p1", TraceQuery(search=search)).data]

    assert found("HELLO world") == [tid(1)]
    assert found("sim 1") == [tid(2)]
    assert found("abc12*") == [tid(2)]
    assert found("straße école") == [tid(3)]
    assert found("东京") == []
    assert found("kept") == [tid(4)]


def _with_trace(record: SpanRecord, **fields: Any) -> SpanRecord:
    """``record`` carrying the trace's own fields ``fields`` (name, input, ...)."""
    return replace(record, trace=TraceAttributes(**fields))


def _trace_vectors(store: SqlStore) -> list[tuple[str, str, str]]:
    """Each trace's id, stored vector (text) and what the trigger of migration 0022 made of its row,
    without positions (strip(), which the searches ignore)."""
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT id, search::text, strip({PG_TRACE_DOCUMENT.format(p='')})::text FROM traces ORDER BY id"
        ).all()
    return [(i, stored, made) for i, stored, made in rows]


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "insert"])
def test_the_writers_trace_vector_is_what_the_trigger_made(pg_store: SqlStore, copy: bool) -> None:
    """Migration 0032: a new trace's vector (its own fields: name, input, output, metadata with its
    keys, tags) comes from the writer; it holds what the trigger made of the same row."""
    pg_store.copy_spans = copy
    records = [
        _with_trace(
            rec(tid(i + 1), sid(1), name="span"),
            name=f"trace {i}",
            input=text,
            output="Out-put",
            tags=("t_1", text[:20]),
            metadata={"Key-A": text, "n": i, "nested": {"deep": ["x y", 1.5]}},
        )
        for i, text in enumerate(TEXTS)
    ]
    pg_store.write_spans(records)
    vectors = _trace_vectors(pg_store)
    assert len(vectors) == len(TEXTS)
    for trace_id, stored, made in vectors:
        assert stored == made, trace_id
    assert "'key'" in vectors[0][1] and "'put'" in vectors[0][1]  # a metadata key; a split word


def test_a_traces_vector_follows_an_update_of_its_fields_only(pg_store: SqlStore) -> None:
    """A later batch that changes a trace's own fields (the root's name replacing a child's, its
    input) has the trigger make the vector again; one that changes none leaves it as it is."""
    pg_store.write_spans([rec(tid(1), sid(2), parent=sid(1), name="provisional")])
    assert "provisional" in _trace_vectors(pg_store)[0][1]
    pg_store.write_spans([_with_trace(rec(tid(1), sid(1), name="rooted"), input="aardvark")])
    ((_, stored, _),) = _trace_vectors(pg_store)
    assert "'rooted'" in stored and "'aardvark'" in stored and "provisional" not in stored
    assert ":" in stored  # the trigger's, with positions
    pg_store.write_spans([rec(tid(1), sid(3), parent=sid(1), name="child")])  # no field changes
    ((_, again, _),) = _trace_vectors(pg_store)
    assert again == stored

    def found(search: str) -> list[str]:
        return [s.trace.id for s in pg_store.list_traces("p1", TraceQuery(search=search)).data]

    assert found("aardvark rooted") == [tid(1)]  # words of the trace's own fields, from two spans


def test_a_trace_another_writer_stored_meanwhile_is_merged_not_refused(
    pg_store: SqlStore, pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New traces and spans go in by COPY, without conflict checks: when another writer stores one of
    them between this writer's read and its COPY, the batch is written again by the upserts, the span
    the other stored counted once."""
    other = SqlStore.from_url(pg_server)
    first = rec(tid(1), sid(1), name="root", usage=Usage(input=3, output=4), kind=ObservationKind.GENERATION)
    second = rec(tid(1), sid(2), parent=sid(1), name="child", input="zebra")
    unseen = SqlStore._unseen
    calls: list[int] = []

    def read_then_other_writes(self: SqlStore, *args: Any) -> Any:
        fresh = unseen(self, *args)
        if not calls:  # the first read only: then the other writer's commit
            calls.append(1)
            other.write_spans([first])
        return fresh

    monkeypatch.setattr(SqlStore, "_unseen", read_then_other_writes)
    try:
        pg_store.write_spans([first, second, rec(tid(2), sid(1), name="alone")])
    finally:
        other.close()
    detail = pg_store.get_trace("p1", tid(1))
    assert detail is not None
    assert sorted(o.id for o in detail.observations) == [sid(1), sid(2)]
    assert detail.trace.observation_count == 2 and detail.trace.usage.total == 7
    assert pg_store.count_spans("p1") == 3
    assert [s.trace.id for s in pg_store.list_traces("p1", TraceQuery(search="zebra")).data] == [tid(1)]


def _has_positions(store: SqlStore, trace_id: str) -> bool:
    """Whether the trace's stored vector has positions (the trigger's; the writer's has none)."""
    ((_, stored, _),) = (v for v in _trace_vectors(store) if v[0] == trace_id)
    return ":" in stored


def test_migration_0032_leaves_the_trigger_to_updates_and_back(empty_pg_url: str) -> None:
    """0032: the trigger no longer makes a new trace's vector (the writer does), only an updated one's
    whose fields changed; its downgrade puts the trigger of every insert and update back. Traces
    stored under either revision are found by their words under both."""
    _migrate(empty_pg_url, "0031")
    store = SqlStore(make_engine(empty_pg_url))  # at 0031: the trigger makes every vector
    try:
        store.write_spans([_with_trace(rec(tid(1), sid(1)), name="walrus tusk")])
        assert _has_positions(store, tid(1))
    finally:
        store.close()

    def found(store: SqlStore, words: str) -> list[str]:
        return sorted(s.trace.id for s in store.list_traces("p1", TraceQuery(search=words)).data)

    _migrate(empty_pg_url, "head")
    store = SqlStore.from_url(empty_pg_url)
    try:
        store.write_spans([_with_trace(rec(tid(2), sid(1)), name="walrus tooth")])
        assert not _has_positions(store, tid(2))
        store.write_spans([rec(tid(2), sid(2), parent=sid(1))])  # no field of the trace changes
        assert not _has_positions(store, tid(2))
        assert [stored == made for i, stored, made in _trace_vectors(store) if i == tid(2)] == [True]
        assert found(store, "walrus") == [tid(1), tid(2)] and found(store, "tusk") == [tid(1)]
    finally:
        store.close()

    _migrate(empty_pg_url, "0031", down=True)
    store = SqlStore(make_engine(empty_pg_url))
    try:
        store.write_spans([_with_trace(rec(tid(3), sid(1)), name="walrus")])
        assert _has_positions(store, tid(3))
        assert found(store, "walrus") == [tid(1), tid(2), tid(3)] and found(store, "tooth") == [tid(2)]
    finally:
        store.close()


def test_the_writers_histograms_are_postgresqls_binary_arrays(pg_store: SqlStore) -> None:
    """The rollup rows' histograms go into the COPY in bigint[]'s binary form, made by the writer
    (pg_binary_hist): exactly what PostgreSQL's own array_send makes of the same array."""
    cases = [[1], [0, 0, 3, 0, 7], [5, 0, 0], [0, 0], [], [2**62, 1] + [0] * 97 + [9]]
    with pg_store.engine.connect() as conn:
        for counts in cases:
            trimmed = counts[: max((i + 1 for i, c in enumerate(counts) if c), default=0)]
            sent = conn.exec_driver_sql("SELECT array_send(%s::bigint[])", (trimmed,)).scalar_one()
            assert pg_binary_hist(counts) == bytes(sent), counts


def test_rollups_written_by_copy_read_back_as_by_insert(pg_store: SqlStore) -> None:
    """The same model calls written by COPY (binary histograms) and row by row read back the same."""
    usage = Usage(input=10, output=5)
    calls = [
        rec(tid(i + 1), sid(1), kind=ObservationKind.GENERATION, model="m", usage=usage, ms=10.0 * (i + 1))
        for i in range(40)
    ]
    sums = {}
    for copy in (True, False):
        _clean(pg_store)
        pg_store.copy_spans = copy
        pg_store.write_spans(calls[:20])
        pg_store.write_spans(calls[20:])  # summed into the stored rows
        sums[copy] = [
            (m.model, m.sums)
            for m in pg_store.model_metrics("p1", T0 // 10**9 - 3600, T0 // 10**9 + 3600, 60)
        ]
    assert sums[True] == sums[False] and sums[True][0][1].count == 40


def test_trace_ids_go_as_an_array_literal_postgresql_reads_back(pg_store: SqlStore) -> None:
    """The batch's trace ids are one text[] parameter, passed as its literal (pg_text_array): any id
    reads back as itself, in order."""
    cases = [
        [tid(1), tid(2), "ABCdef0123"],  # hex: unquoted
        [],
        ["NULL", "null", ""],  # not NULLs, and the empty id
        ['a"b', "c\\d", "e,f", "{g}", " h ", "i j", "ü", "'k'"],
        [tid(3), "not hex"],
    ]
    with pg_store.engine.connect() as conn:
        for ids in cases:
            read = conn.exec_driver_sql("SELECT %s::text[]", (pg_text_array(iter(ids)),)).scalar_one()
            assert read == ids
            found = conn.exec_driver_sql(
                "SELECT count(*) FROM unnest(%s::text[]) v WHERE v = ANY(%s)", (ids, pg_text_array(ids))
            ).scalar_one()
            assert found == len(ids)
