"""Issue 23 items 6 and 7: full-text search through the index (FTS5 on SQLite, tsvector + GIN on
PostgreSQL) over span names, inputs, outputs, attribute and metadata values; both of its plans (few
matches: read from the index; many: a probe per trace) give the same pages; the new filters (key,
metadata, score range, several tags) and the sortable columns page correctly, on both databases."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import event

from pilothouse.domain.money import Money
from pilothouse.domain.queries import InvalidQuery, TraceQuery, next_page
from pilothouse.domain.scores import make_score
from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)
from pilothouse.store import search, trace_list
from pilothouse.store.sql import SqlStore
from pilothouse.store.trace_list import trace_list_statement, walk_sort_index

START = 1_700_000_000 * 10**9


def _trace(
    index: int,
    *,
    name: str = "chat",
    input_: str | None = None,
    output: str | None = None,
    attributes: dict[str, object] | None = None,
    trace: TraceAttributes | None = None,
    latency_ms: int = 100,
    cost: str = "0",
    tokens: int = 0,
    error: bool = False,
    key_id: str | None = None,
    project: str = "p",
) -> list[SpanRecord]:
    trace_id = f"{index + 1:032x}"
    root = Observation(
        trace_id,
        f"{index + 1:016x}",
        name,
        START + index * 1000,
        START + index * 1000 + latency_ms * 10**6,
        input=input_,
        output=output,
        attributes=attributes or {},
    )
    child = Observation(
        trace_id,
        f"{index + 1:08x}{'c' * 8}",
        "llm",
        START + index * 1000,
        START + index * 1000 + 10**6,
        parent_id=root.id,
        kind=ObservationKind.GENERATION,
        usage=Usage(input=tokens, output=0),
        cost=Cost({"input": Money.from_usd(cost)}, "v1"),
        status=Status.ERROR if error else Status.OK,
        model="sim",
        attributes={"gateway.key_id": key_id} if key_id else {},
    )
    return [
        SpanRecord(project, root, trace or TraceAttributes()),
        SpanRecord(project, child, TraceAttributes(), metered=key_id is not None),
    ]


def _ids(store: SqlStore, query: TraceQuery, project: str = "p") -> list[str]:
    """Every page of the query, in order."""
    found: list[str] = []
    page: TraceQuery | None = query
    while page is not None:
        result = store.list_traces(project, page)
        found.extend(s.trace.id for s in result.data)
        page = next_page(page, result.next_cursor) if result.next_cursor else None
    return found


def tid(index: int) -> str:
    return f"{index + 1:032x}"


def test_search_finds_words_in_every_field(store: SqlStore) -> None:
    records = [
        *_trace(0, name="alpha-route", input_="The quick brown fox", output="a lazy dog"),
        *_trace(1, attributes={"note": {"animal": "zebra"}}, output="brown bread"),
        *_trace(2, trace=TraceAttributes(metadata={"team": "heron"}, tags=("walrus",), input="Übermut")),
        *_trace(3, output="nothing to see"),
    ]
    records.append(SpanRecord("other", records[0].observation, TraceAttributes()))  # another project
    store.write_spans(records)
    cases = {
        "alpha": [tid(0)],
        "route": [tid(0)],
        "QUICK": [tid(0)],
        "quick dog": [tid(0)],  # every word, in one span
        "qui*": [tid(0)],
        "brown": [tid(1), tid(0)],  # newest first
        "zebra": [tid(1)],  # an attribute's value
        "heron": [tid(2)],  # trace metadata
        "walrus": [tid(2)],  # a tag
        "übermut": [tid(2)],
        "nowhere": [],
        "quick zebra": [],  # not in one span
    }
    for text, expected in cases.items():
        assert _ids(store, TraceQuery(search=text)) == expected, text
    assert _ids(store, TraceQuery(search="quick"), project="other") == [tid(0)]


@pytest.mark.parametrize("plan", list(search.Plan))
def test_every_plan_gives_the_same_pages(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch, plan: search.Plan
) -> None:
    records = []
    for i in range(40):
        words = "common" + (" rare" if i % 7 == 0 else "") + (" commons" if i % 5 == 0 else "")
        records += _trace(i, input_=words, error=i % 3 == 0, latency_ms=100 + (i * 37) % 400)
    records += _trace(40, input_=" ".join(f"comm{n}" for n in range(search.PROBE_TERMS)))
    store.write_spans(records)
    queries = [
        TraceQuery(search="common", limit=6),
        TraceQuery(search="rare", limit=2),
        TraceQuery(search="common", status=Status.ERROR, limit=4),
        TraceQuery(search="common", sort="latency", limit=5),
        TraceQuery(search="comm*", sort="latency", descending=False, limit=7),  # > PROBE_TERMS words
        TraceQuery(search="commo*", limit=9),  # two words: expanded
        TraceQuery(search="rare commo*", limit=3),
        TraceQuery(search="common", start_ns=START + 10 * 1000, end_ns=START + 30 * 1000, limit=4),
        TraceQuery(search="c*", limit=5),  # 1 and 2 characters: the index's own prefix lists (0028)
        TraceQuery(search="rare co*", sort="latency", limit=3),
    ]
    chosen = [_ids(store, q) for q in queries]
    monkeypatch.setattr(search, "choose_plan", lambda *_: plan)
    assert [_ids(store, q) for q in queries] == chosen
    assert len(chosen[0]) == 40 and chosen[1] == [tid(i) for i in range(35, -1, -7)]
    assert chosen[2] == [tid(i) for i in range(39, -1, -1) if i % 3 == 0]
    assert chosen[5] == [tid(i) for i in range(39, -1, -1)]
    assert chosen[6] == [tid(i) for i in range(35, -1, -7)]
    assert chosen[7] == [tid(i) for i in range(29, 9, -1)]
    assert chosen[8] == [tid(i) for i in range(40, -1, -1)]  # "chat", "common", "comm0", ...
    assert sorted(chosen[9]) == sorted(chosen[1])


def test_a_prefix_stands_for_its_words(sqlite_store: SqlStore) -> None:
    """SQLite: a prefix of few words is looked up as those words (FTS5 would merge their lists on
    every probe), one of many words as a prefix (never probed), and one of no word matches nothing
    without a look-up of the spans."""
    words = ["answer", "answered", "answers", "zebra"] + [f"many{n}" for n in range(search.PROBE_TERMS + 1)]
    sqlite_store.write_spans(_trace(0, input_=" ".join(words)))
    with sqlite_store.engine.connect() as conn:
        assert search.prefix_words(conn, "answ", 10) == ["answer", "answered", "answers"]
        assert search.prefix_words(conn, "answ", 2) == ["answer", "answered"]
        assert search.prefix_words(conn, "answers", 10) == ["answers"]
        assert search.prefix_words(conn, "xylo", 10) == []
        expression = search.fts5_expression(conn, ["zebra", "answ"], prefix=True)
        assert expression == ('"zebra" AND ("answer" OR "answered" OR "answers")', 4)
        assert search.fts5_expression(conn, ["many"], prefix=True) == ('"many"*', None)
        assert search.fts5_expression(conn, ["xylo"], prefix=True) == (None, 0)
        assert search.fts5_expression(conn, ["über"], prefix=True) == ('"über"*', None)  # FTS5 folds it
        assert search.fts5_expression(conn, ["two", "words"], prefix=False) == ('"two" "words"', 2)
        # 1 or 2 characters: one term of the index's prefix lists (migration 0028), never expanded
        assert search.fts5_expression(conn, ["a"], prefix=True) == ('"a"*', 1)
        assert search.fts5_expression(conn, ["zebra", "an"], prefix=True) == ('"zebra" "an"*', 2)
    assert _ids(sqlite_store, TraceQuery(search="ze*")) == [tid(0)]
    assert _ids(sqlite_store, TraceQuery(search="many*")) == [tid(0)]
    assert _ids(sqlite_store, TraceQuery(search="xylo*")) == []


def test_the_cheapest_plan_is_chosen() -> None:
    """At a million spans and a page of 50: a rare word is read by key, a common one probed, one in
    between listed; a prefix of many words is never probed; past count_bound the choice stays."""
    million, page = 1_000_000, 50
    assert search.choose_plan(0, million, 1, page) is search.Plan.KEYS
    assert search.choose_plan(2_000, million, 1, page) is search.Plan.KEYS
    assert search.choose_plan(20_000, million, 1, page) is search.Plan.LIST
    assert search.choose_plan(500_000, million, 1, page) is search.Plan.PROBE
    assert search.choose_plan(500_000, million, None, page) is search.Plan.LIST
    assert search.choose_plan(100_000, million, 1, page) is search.Plan.LIST
    assert search.choose_plan(100_000, million, 16, page) is search.Plan.LIST  # 16 words: a dear probe
    for terms in (None, 1, 4):
        bound = search.count_bound(million, terms, page)
        at = search.choose_plan(bound, million, terms, page)
        assert all(search.choose_plan(n, million, terms, page) is at for n in (bound * 2, bound * 10))


def test_filters_key_metadata_score_and_tags(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    records = []
    for i in range(12):
        meta = {"team": "search" if i % 2 else "ingest", "tier": str(i % 3)}
        tags = ("a", "b") if i % 4 == 0 else ("a",)
        records += _trace(i, trace=TraceAttributes(metadata=meta, tags=tags), key_id=f"key{i % 3}")
    store.write_spans(records)
    store.add_scores(
        "p",
        [make_score(trace_id=tid(i), name="quality", value=i / 10, data_type="numeric") for i in range(12)]
        + [make_score(trace_id=tid(0), name="other", value=0.5, data_type="numeric")],
    )
    every = range(11, -1, -1)
    cases = [
        (TraceQuery(metadata=(("team", "search"),)), [i for i in every if i % 2]),
        (
            TraceQuery(metadata=(("team", "search"), ("tier", "0"))),
            [i for i in every if i % 2 and i % 3 == 0],
        ),
        (TraceQuery(metadata=(("missing", "x"),)), []),
        (TraceQuery(tags=("a", "b")), [i for i in every if i % 4 == 0]),
        (TraceQuery(key_id="key1"), [i for i in every if i % 3 == 1]),
        (TraceQuery(score_name="quality", min_score=0.3, max_score=0.6), [6, 5, 4, 3]),
        (TraceQuery(score_name="other"), [0]),
        (TraceQuery(score_name="quality", min_score=0.5, key_id="key2"), [11, 8, 5]),
        (TraceQuery(score_name="nobody-scores-this"), []),
        (TraceQuery(score_name="quality", min_score=0.3, sort="cost", limit=2), list(range(11, 2, -1))),
    ]
    for query, expected in cases:
        assert _ids(store, query) == [tid(i) for i in expected], query
    # a score on more traces than are read by key: each trace is probed for it, with the same pages
    monkeypatch.setattr(trace_list, "SCORED_BY_KEY", 2)
    for query, expected in cases:
        assert _ids(store, query) == [tid(i) for i in expected], query


def test_sorted_pages_keep_every_trace_once(store: SqlStore) -> None:
    records = []
    for i in range(23):
        # ties on purpose: the pages must neither skip nor repeat traces of the same value
        records += _trace(i, latency_ms=100 + (i % 4) * 50, cost=f"0.00{i % 5}", tokens=(i % 6) * 10)
    store.write_spans(records)
    full = {s.trace.id: s.trace for s in store.list_traces("p", TraceQuery(limit=100)).data}
    value = {
        "latency": lambda tr: tr.end_ns - tr.start_ns,
        "cost": lambda tr: tr.cost_usd,
        "tokens": lambda tr: tr.usage.total,
        "time": lambda tr: 0,
    }
    for sort in ("time", "latency", "cost", "tokens"):
        for descending in (True, False):
            found = _ids(store, TraceQuery(sort=sort, descending=descending, limit=4))
            assert sorted(found) == sorted(full), (sort, descending)
            expected = sorted(
                full, key=lambda i: (value[sort](full[i]), full[i].start_ns), reverse=descending
            )
            assert found == expected, (sort, descending)


def test_a_sorted_range_walks_the_sort_index_with_the_same_pages(
    sqlite_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: a list sorted by cost, latency or tokens over a time range of many traces walks the
    sort's index (the range's start checked on it) instead of reading the range and sorting it; the
    pages are the same either way, cursors included; a filter on an environment no trace has, and the
    sort by tokens, have indexes of their own (migration 0028)."""
    records = []
    for i in range(30):
        records += _trace(i, latency_ms=100 + (i % 4) * 50, cost=f"0.00{i % 5}", tokens=(i % 6) * 10)
    sqlite_store.write_spans(records)
    queries = [
        TraceQuery(sort=sort, descending=descending, start_ns=START + 5_000, end_ns=START + 25_000, limit=4)
        for sort in ("cost", "latency", "tokens")
        for descending in (True, False)
    ]
    queries.append(TraceQuery(sort="cost", start_ns=START + 12_000, limit=3))
    by_time = [_ids(sqlite_store, q) for q in queries]
    assert all(len(found) == 20 for found in by_time[:-1]) and len(by_time[-1]) == 18
    with sqlite_store.engine.connect() as conn:
        assert not walk_sort_index(conn, "p", queries[0])
        monkeypatch.setattr(trace_list, "RANGE_SORT_TRACES", 20)
        assert walk_sort_index(conn, "p", queries[0]) and not walk_sort_index(conn, "p", queries[-1])
        monkeypatch.setattr(trace_list, "RANGE_SORT_TRACES", 1)
        assert walk_sort_index(conn, "p", queries[0])
        assert not walk_sort_index(conn, "p", TraceQuery(sort="time", start_ns=START))
        assert not walk_sort_index(conn, "p", TraceQuery(sort="cost"))
        for query, index in ((queries[0], "ix_traces_cost"), (queries[4], "ix_traces_tokens")):
            stmt = trace_list_statement("p", query, True, sort_walk=True)
            compiled = stmt.compile(conn.engine, compile_kwargs={"literal_binds": True})
            plan = " ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
            assert index in plan and "TEMP B-TREE" not in plan, plan
        for column in ("environment", "release"):
            stmt = trace_list_statement("p", TraceQuery(**{column: "staging"}), True)
            compiled = stmt.compile(conn.engine, compile_kwargs={"literal_binds": True})
            plan = " ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
            assert f"ix_traces_{column}" in plan, plan
    assert [_ids(sqlite_store, q) for q in queries] == by_time


def test_few_matches_are_read_by_key_within_a_time_range(sqlite_store: SqlStore) -> None:
    """SQLite: the traces of a rare word are read by key even when the list has a time range (the
    project's time index holds the key too, and walking it whole took seconds at a million spans)."""
    sqlite_store.write_spans([r for i in range(30) for r in _trace(i, input_="rare" if i % 10 == 3 else "x")])
    query = TraceQuery(search="rare", start_ns=START, end_ns=START + 10**9)
    with sqlite_store.engine.connect() as conn:
        condition, by_key = search.search_condition(conn, "sqlite", "rare")
        assert by_key
        stmt = trace_list_statement("p", query, True, condition, by_key)
        compiled = stmt.compile(conn.engine, compile_kwargs={"literal_binds": True})
        plan = " ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    assert "INTEGER PRIMARY KEY" in plan and "ix_traces_time" not in plan, plan
    assert _ids(sqlite_store, query) == [tid(23), tid(13), tid(3)]


def test_more_keys_than_sqlite_binds_fall_back_to_the_list(
    sqlite_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite refuses a statement with more bound parameters than its limit (32,766 in many builds):
    # the by-key plan binds one per matching trace, so past the limit it reads the list instead
    sqlite_store.write_spans([r for i in range(60) for r in _trace(i, input_="word")])
    expected = [tid(i) for i in range(59, -1, -1)]  # every page of 10
    assert _ids(sqlite_store, TraceQuery(search="word", limit=10)) == expected

    def low_limit(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 50)

    event.listen(sqlite_store.engine, "connect", low_limit)
    sqlite_store.engine.dispose()  # new connections, with the low limit
    monkeypatch.setattr(search, "choose_plan", lambda *_: search.Plan.KEYS)
    assert _ids(sqlite_store, TraceQuery(search="word", limit=10)) == expected


def test_a_star_before_the_end_is_refused_not_ignored() -> None:
    assert search.query_words("say hel*") == (["say", "hel"], True)
    assert search.query_words("say hel** ") == (["say", "hel"], True)
    for text in ("hel* say", "a*b", "* hello"):
        with pytest.raises(InvalidQuery, match="only the last word can be a prefix"):
            search.query_words(text)
