"""PostgreSQL at scale: span texts packed into bytea (migration 0025) and read back and searched as text,
spans partitioned by day (migration 0027), partitions created ahead and dropped by retention, the
migration of a store with data, and the search index's small pending list (migration 0030). On the real
PostgreSQL (the packing tests on SQLite too)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import text

from pilothouse.domain.queries import TraceQuery
from pilothouse.domain.traces import SpanRecord, TraceAttributes
from pilothouse.store.analytics import AnalyticsQueries
from pilothouse.store.engine import make_engine
from pilothouse.store.partitions import (
    DAY_NS,
    DEFAULT,
    SCHEMA,
    day_name,
    day_start,
    ensure_ahead,
    ensure_days,
)
from pilothouse.store.partitions import partitions as list_partitions
from pilothouse.store.retention import RetentionStore
from pilothouse.store.rows import is_packed, pack_bytes, unpack
from pilothouse.store.sql import SqlStore
from tests.store.test_migrations import _migrate
from tests.store.test_store import T0, rec, sid, tid

LONG_IN = (
    "Please summarise the quarterly report. " * 40 + "The needle word is aardvark. " + "More text. " * 30
)
LONG_OUT = "Übersicht: revenue grew — ünïcödé ✓ " * 30


def test_pack_bytes_round_trip() -> None:
    for value in (None, "", "hi", "short text", "a\x00b", "é" * 300, LONG_IN, "x" * 10_000):
        stored = pack_bytes(value)
        assert unpack(stored) == value
        if stored is not None:
            assert is_packed(stored) == (value is not None and (len(value) >= 256 or "\x00" in value))
    stored = pack_bytes(LONG_IN)
    assert stored is not None and len(stored) < len(LONG_IN) // 4  # repetitive text packs well


def test_long_texts_round_trip_and_are_searched(store: SqlStore) -> None:
    store.write_spans(
        [
            rec(tid(1), sid(1), input=LONG_IN, output=LONG_OUT),
            rec(tid(2), sid(1), input="a short prompt about an aardvark", output="ok"),
            rec(tid(3), sid(1), input="x" * 3000, output="nothing to see"),
        ]
    )
    detail = store.get_trace("p1", tid(1))
    assert detail is not None
    (span,) = detail.observations
    assert span.input == LONG_IN and span.output == LONG_OUT
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            stored = conn.execute(text("SELECT input FROM spans WHERE span_id = :s"), {"s": sid(1)}).all()
        assert all(is_packed(bytes(r.input)) == (len(unpack(bytes(r.input)) or "") >= 256) for r in stored)
    found = store.list_traces("p1", TraceQuery(search="AARDVARK"))
    assert sorted(s.trace.id for s in found.data) == [tid(1), tid(2)]
    found = store.list_traces("p1", TraceQuery(search="ünïcödé"))
    assert [s.trace.id for s in found.data] == [tid(1)]
    assert store.list_traces("p1", TraceQuery(search="zebra")).data == []
    # words, not substrings (the full-text index): "aardvarks" is another word
    assert store.list_traces("p1", TraceQuery(search="aardvarks")).data == []
    # a page of one, then the next: the search's pages stay in order
    first = store.list_traces("p1", TraceQuery(search="aardvark", limit=1))
    assert len(first.data) == 1 and first.next_cursor is not None
    analytics = AnalyticsQueries(store)
    assert analytics.traces_containing("p1", [tid(1), tid(2), tid(3)], "Aardvark") == {tid(1), tid(2)}


@pytest.fixture
def pg_store(empty_pg_url: str) -> Iterator[SqlStore]:
    store = SqlStore.from_url(empty_pg_url)
    yield store
    store.close()


def _names(store: SqlStore) -> list[str]:
    with store.engine.connect() as conn:
        return [p.name for p in list_partitions(conn)]


def _count(store: SqlStore, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_a_new_store_has_partitions_for_today_and_the_days_ahead(pg_store: SqlStore) -> None:
    today = day_start(time.time_ns())
    names = _names(pg_store)
    assert names[0] == DEFAULT
    assert names[1:] == [day_name(today + d * DAY_NS) for d in range(8)]
    assert ensure_ahead(pg_store.engine, time.time_ns()) == []  # all there already
    assert ensure_ahead(pg_store.engine, time.time_ns(), days=9) == [
        day_name(today + 8 * DAY_NS),
        day_name(today + 9 * DAY_NS),
    ]
    # a span of today lands in today's partition; one of long ago in the default partition
    pg_store.write_spans([rec(tid(1), sid(1), start_s=time.time() - T0 / 1e9), rec(tid(2), sid(1))])
    assert _count(pg_store, f"{SCHEMA}.{day_name(today)}") == 1
    assert _count(pg_store, f"{SCHEMA}.{DEFAULT}") == 1
    # a retried export is still recognised (the unique key holds the start)
    pg_store.write_spans([rec(tid(2), sid(1))])
    assert pg_store.count_spans("p1") == 2


def test_retention_drops_whole_partitions_and_deletes_the_rest_in_batches(pg_store: SqlStore) -> None:
    now = T0 + 40 * DAY_NS
    old, older = T0 + 4 * DAY_NS, T0 + 2 * DAY_NS  # 36 and 38 days before now

    def at(ns: int) -> float:
        return (ns - T0) / 1e9 + 3600

    pg_store.write_spans(
        [
            rec(tid(1), sid(1), start_s=at(older), input=LONG_IN),  # p1 only on that day
            rec(tid(2), sid(1), start_s=at(old)),
            rec(tid(3), sid(1), start_s=at(old), project="p2"),  # p2 keeps its spans: keeps that day
            rec(tid(4), sid(1), start_s=at(now - DAY_NS)),  # recent
        ]
    )
    assert _count(pg_store, f"{SCHEMA}.{DEFAULT}") == 4  # before their days had partitions
    created = ensure_days(pg_store.engine, older, now)
    assert day_name(day_start(older)) in created and day_name(day_start(old)) in created
    assert _count(pg_store, f"{SCHEMA}.{DEFAULT}") == 0  # moved into their days
    assert _count(pg_store, f"{SCHEMA}.{day_name(day_start(older))}") == 1

    kept = RetentionStore(pg_store)
    kept.set_retention_days("p1", 30)
    assert kept.expire(now) == {"p1": 2}  # its traces, in batches, after the drop
    # the day of p1 alone, and the empty days before the cutoff; not the day p2 keeps
    assert day_name(day_start(older)) in kept.dropped_partitions
    assert day_name(day_start(old)) not in kept.dropped_partitions
    names = _names(pg_store)
    assert day_name(day_start(older)) not in names and day_name(day_start(old)) in names
    assert pg_store.get_trace("p1", tid(1)) is None and pg_store.get_trace("p1", tid(2)) is None
    assert pg_store.get_trace("p2", tid(3)) is not None and pg_store.get_trace("p1", tid(4)) is not None
    assert pg_store.count_spans("p1") == 1 and pg_store.count_spans("p2") == 1

    # once p2 has a retention too, the day it kept goes (its trace with it)
    kept.set_retention_days("p2", 30)
    assert kept.expire(now) == {"p2": 1}
    assert day_name(day_start(old)) in kept.dropped_partitions
    assert pg_store.count_spans("p2") == 0 and pg_store.count_spans("p1") == 1


def test_migration_partitions_a_store_with_data(empty_pg_url: str) -> None:
    """0025 and 0027 carry stored spans over (texts become bytea, rows move into the partitions),
    and their downgrades bring back the tables as they were, packed texts unpacked."""
    _migrate(empty_pg_url, "0021")
    store = SqlStore(make_engine(empty_pg_url))
    # written by the code of 0021 would look the same: plain text, one unpartitioned table
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO traces (project_id, id, start_ns, end_ns, observation_count, error_count, "
                "input_tokens, output_tokens, total_tokens, cost_usd, unpriced_count) "
                "VALUES ('p1', :t, :s, :s, 1, 0, 0, 0, 0, 0, 0)"
            ),
            [{"t": tid(n), "s": T0 + n * DAY_NS} for n in range(1, 4)],
        )
        conn.execute(
            text(
                "INSERT INTO spans (project_id, trace_pk, span_id, kind, name, start_ns, end_ns, status, "
                "input, attributes) SELECT 'p1', pk, :s, 'span', 'op', start_ns, end_ns, 'ok', :i, :a "
                "FROM traces"
            ),
            {"s": sid(1), "i": LONG_IN, "a": '{"k": "v"}'},
        )
    store.close()

    _migrate(empty_pg_url, "head")
    store = SqlStore.from_url(empty_pg_url)
    try:
        names = _names(store)
        assert names[:2] == [DEFAULT, "spans_history"]
        assert _count(store, f"{SCHEMA}.spans_history") == 3 and store.count_spans("p1") == 3
        detail = store.get_trace("p1", tid(2))
        assert detail is not None
        (span,) = detail.observations
        assert span.input == LONG_IN and span.attributes == {"k": "v"}
        assert [s.trace.id for s in store.list_traces("p1", TraceQuery(search="aardvark")).data] == [
            tid(3),
            tid(2),
            tid(1),
        ]
        # a retried export of a migrated span is recognised; a new span with a long text is packed
        store.write_spans([SpanRecord("p1", span, TraceAttributes())])
        store.write_spans([rec(tid(9), sid(1), input=LONG_IN + " new")])
        assert store.count_spans("p1") == 4
    finally:
        store.close()

    _migrate(empty_pg_url, "0021", down=True)
    engine = make_engine(empty_pg_url)
    try:
        with engine.connect() as conn:
            kind = conn.execute(text("SELECT relkind FROM pg_class WHERE relname = 'spans'")).scalar_one()
            rows = conn.execute(text("SELECT input FROM spans ORDER BY start_ns")).all()
        assert kind == "r"
        assert sorted(r.input for r in rows) == [LONG_IN] * 3 + [LONG_IN + " new"]
    finally:
        engine.dispose()


def _pending_list_limits(store: SqlStore) -> dict[str, list[str] | None]:
    """The storage parameters of the spans' search index and of each partition's index of it."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, c.reloptions FROM pg_class c WHERE c.oid = 'ix_spans_search'::regclass "
                "OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'ix_spans_search'::regclass)"
            )
        ).all()
    return {name: options for name, options in rows}


def test_search_index_migration_keeps_a_small_pending_list_and_finds_what_it_found(
    empty_pg_url: str,
) -> None:
    """0030 builds the spans' search index again with a 256 kB pending list (the partitions made
    later copy it); the spans stored before are found as before, by either revision's index."""
    _migrate(empty_pg_url, "0029")
    store = SqlStore(make_engine(empty_pg_url))  # at 0029
    try:
        store.write_spans([rec(tid(1), sid(1), input=LONG_IN), rec(tid(2), sid(1), output="a zebra answer")])
        assert all(options is None for options in _pending_list_limits(store).values())
    finally:
        store.close()

    def found(store: SqlStore, words: str) -> list[str]:
        return [s.trace.id for s in store.list_traces("p1", TraceQuery(search=words)).data]

    _migrate(empty_pg_url, "head")
    store = SqlStore.from_url(empty_pg_url)
    try:
        ensure_days(store.engine, T0 - 3 * DAY_NS, T0 - 2 * DAY_NS)  # the retention job's new days
        limits = _pending_list_limits(store)
        assert len(limits) == len(_names(store)) + 1  # the index and one per partition
        assert all(options == ["gin_pending_list_limit=256"] for options in limits.values())
        store.write_spans([rec(tid(3), sid(1), start_s=-2.5 * 86_400, input="zebra crossing")])
        assert found(store, "aardvark") == [tid(1)]
        assert sorted(found(store, "zebra")) == [tid(2), tid(3)]
        assert found(store, "zeb*") == found(store, "zebra")
        assert found(store, "xylophone") == []
    finally:
        store.close()

    _migrate(empty_pg_url, "0029", down=True)
    store = SqlStore(make_engine(empty_pg_url))
    try:
        assert all(options is None for options in _pending_list_limits(store).values())
        assert sorted(found(store, "zebra")) == [tid(2), tid(3)]
    finally:
        store.close()


def test_key_and_model_filters_find_a_trace_whose_calls_are_in_a_later_day(pg_store: SqlStore) -> None:
    """The trace list's probes for a key or a model read only the partitions from the trace's start
    on (no span starts before its trace): a call a day after its trace's root is still found."""
    ensure_days(pg_store.engine, T0, T0 + DAY_NS)
    call = rec(tid(1), sid(2), parent=sid(1), model="m-late", start_s=86_400.0)
    metered = SpanRecord(
        "p1",
        replace(call.observation, attributes={"gateway.key_id": "key-late"}),
        call.trace,
        metered=True,
    )
    pg_store.write_spans([rec(tid(1), sid(1)), metered, rec(tid(2), sid(1), model="m-other")])
    assert _count(pg_store, f"{SCHEMA}.{day_name(day_start(T0))}") == 2  # the roots
    assert _count(pg_store, f"{SCHEMA}.{day_name(day_start(T0) + DAY_NS)}") == 1  # the call

    def found(query: TraceQuery) -> list[str]:
        return [s.trace.id for s in pg_store.list_traces("p1", query).data]

    assert found(TraceQuery(key_id="key-late")) == [tid(1)]
    assert found(TraceQuery(model="m-late")) == [tid(1)]
    assert found(TraceQuery(key_id="key-none")) == []
