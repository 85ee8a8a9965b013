"""Issue 26 item 2: PostgreSQL ingest at the SQLite default's speed. The writer computes a span's search
vector itself (PostgreSQL's text parser cost ~10x the rest of a span's insert) and sends it in binary;
it must hold what PostgreSQL's own ``to_tsvector('simple', ...)`` made of the same words, so that the
searches (``to_tsquery('simple', ...)``) find what they found before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pilothouse.domain.queries import TraceQuery
from pilothouse.domain.traces import ObservationKind, Usage
from pilothouse.store.rows import pg_binary_hist
from pilothouse.store.search import _WORD, search_document
from pilothouse.store.sql import SqlStore, pg_text_array
from tests.conftest import _clean
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
