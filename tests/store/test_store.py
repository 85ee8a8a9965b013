"""The store on SQLite and on the real PostgreSQL: writes, merges, queries, keys, rollups."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import zstandard

from pilothouse.domain.keys import DEFAULT_SCOPES, Scope
from pilothouse.domain.money import Money
from pilothouse.domain.queries import TraceQuery, decode_cursor
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
from pilothouse.store.rows import PACK_MIN_CHARS, pack, unpack
from pilothouse.store.sql import SqlStore

T0 = 1_790_000_000 * 10**9  # a fixed start time (ns), 2026-09-21


def rec(
    trace_id: str,
    span_id: str,
    *,
    parent: str | None = None,
    name: str = "op",
    kind: ObservationKind = ObservationKind.SPAN,
    model: str | None = None,
    usage: Usage | None = None,
    start_s: float = 0.0,
    ms: float = 100.0,
    status: Status = Status.OK,
    project: str = "p1",
    cost: Cost | None = None,
    input: str | None = None,
    output: str | None = None,
    **trace: object,
) -> SpanRecord:
    start = T0 + int(start_s * 1e9)
    return SpanRecord(
        project,
        Observation(
            trace_id=trace_id,
            id=span_id,
            parent_id=parent,
            name=name,
            kind=kind,
            start_ns=start,
            end_ns=start + int(ms * 1e6),
            status=status,
            model=model,
            usage=usage or Usage(),
            cost=cost,
            input=input,
            output=output,
        ),
        TraceAttributes(**trace),  # type: ignore[arg-type]
    )


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


def test_trace_is_merged_across_batches_children_first(store: SqlStore) -> None:
    # The child arrives first; the root (with the trace's real name) in a later batch.
    store.write_spans(
        [
            rec(
                tid(1),
                sid(2),
                parent=sid(1),
                name="llm",
                kind=ObservationKind.GENERATION,
                model="gpt-4o",
                usage=Usage(input=8, output=5, cache_read=2),
                start_s=0.1,
                ms=50,
                cost=Cost({"input": Money.from_usd("0.001"), "output": Money.from_usd("0.002")}, "v1"),
                user_id="u1",
            )
        ]
    )
    store.write_spans(
        [
            rec(
                tid(1),
                sid(1),
                name="agent",
                ms=300,
                input="question",
                output="answer",
                session_id="s1",
                tags=("a",),
            )
        ]
    )
    detail = store.get_trace("p1", tid(1))
    assert detail is not None
    t = detail.trace
    assert t.name == "agent"
    assert (t.user_id, t.session_id, t.tags) == ("u1", "s1", ("a",))
    assert t.observation_count == 2
    assert t.usage.input == 10 and t.usage.output == 5 and t.usage.total == 15
    assert t.cost_usd == Money.from_usd("0.003")
    assert t.latency_ms == pytest.approx(300)
    assert t.model == "gpt-4o"
    assert (t.input, t.output) == ("question", "answer")  # from the root span
    assert [o.name for o in detail.observations] == ["agent", "llm"]
    llm = detail.observations[1]
    assert llm.usage == Usage(input=8, output=5, cache_read=2)
    assert llm.cost is not None and llm.cost.items == {
        "input": Money.from_usd("0.001"),
        "output": Money.from_usd("0.002"),
    }


def test_duplicate_spans_are_stored_and_counted_once(store: SqlStore) -> None:
    call = rec(
        tid(3),
        sid(1),
        name="root",
        kind=ObservationKind.GENERATION,
        model="m",
        usage=Usage(input=5, output=2),
    )
    store.write_spans([call, call])  # repeated within a batch
    store.write_spans([call])  # and an exporter's retry of an export already stored
    assert store.count_spans("p1") == 1
    detail = store.get_trace("p1", tid(3))
    assert detail is not None and detail.trace.observation_count == 1 and detail.trace.usage.total == 7
    (metrics,) = store.model_metrics("p1", T0 // 10**9 - 60, T0 // 10**9 + 60, 60)
    assert metrics.sums.count == 1 and metrics.sums.input_tokens == 5


def all_pages(store: SqlStore, limit: int) -> list[str]:
    """The ids of every trace of p1, newest first, read page by page through the cursors."""
    seen: list[str] = []
    query = TraceQuery(limit=limit)
    while True:
        page = store.list_traces("p1", query)
        seen.extend(s.trace.id for s in page.data)
        if page.next_cursor is None:
            return seen
        query = TraceQuery(limit=limit, cursor=decode_cursor(page.next_cursor))


def test_list_traces_filters_and_keyset_pages(store: SqlStore) -> None:
    records = []
    for i in range(25):
        records.append(
            rec(
                tid(100 + i),
                sid(1),
                name="chat" if i % 2 else "search",
                kind=ObservationKind.GENERATION,
                model="m-even" if i % 2 == 0 else "m-odd",
                usage=Usage(input=i, output=1),
                start_s=i,
                ms=10 * i,
                status=Status.ERROR if i % 5 == 0 else Status.OK,
                user_id=f"user{i % 3}",
                session_id=f"sess{i % 4}",
                tags=("prod",) if i < 10 else ("dev",),
                input=f"question number {i}",
                output="the answer is 42" if i == 7 else "no idea",
                cost=Cost({"total": Money.from_usd("0.01") * i}),
            )
        )
    store.write_spans(records)
    assert all_pages(store, 10) == [tid(100 + i) for i in reversed(range(25))]

    def ids(**kw: object) -> set[int]:
        page = store.list_traces("p1", TraceQuery(limit=100, **kw))  # type: ignore[arg-type]
        return {int(s.trace.id, 16) - 100 for s in page.data}

    assert ids(name="chat") == {i for i in range(25) if i % 2}
    assert ids(model="m-even") == {i for i in range(25) if i % 2 == 0}
    assert ids(user_id="user1") == {i for i in range(25) if i % 3 == 1}
    assert ids(session_id="sess0") == {i for i in range(25) if i % 4 == 0}
    assert ids(tags=("prod",)) == set(range(10))
    assert ids(status=Status.ERROR) == {0, 5, 10, 15, 20}
    assert ids(min_latency_ms=200) == set(range(20, 25))
    assert ids(min_cost_usd=Money.from_usd("0.2")) == set(range(20, 25))
    assert ids(search="answer is 42") == {7}
    assert ids(search="ANSWER IS 42") == {7}  # case-insensitive on both databases
    assert ids(search="100%") == set()  # LIKE wildcards are taken literally
    assert ids(start_ns=T0 + 20 * 10**9, end_ns=T0 + 22 * 10**9) == {20, 21}
    row = store.list_traces("p1", TraceQuery(limit=1, search="answer is 42")).data[0]
    assert row.input_preview == "question number 7"


def test_pages_of_traces_that_started_together_neither_repeat_nor_skip(store: SqlStore) -> None:
    # Ties in start time are broken by the trace's key (the order it was first stored in).
    store.write_spans([rec(tid(200 + i), sid(i), start_s=5) for i in range(5)])
    store.write_spans([rec(tid(300), sid(9), start_s=1)])
    assert all_pages(store, 2) == [tid(204), tid(203), tid(202), tid(201), tid(200), tid(300)]
    # a cursor naming a trace that is not stored goes on after its start time
    gone = TraceQuery(limit=10, cursor=(T0 + 5 * 10**9, tid(999)))
    assert [s.trace.id for s in store.list_traces("p1", gone).data] == [tid(300)]


def test_model_filter_finds_a_model_any_span_of_the_trace_called(store: SqlStore) -> None:
    # The trace row keeps its first model; the filter must also find the others (spans probed).
    gen = ObservationKind.GENERATION
    store.write_spans(
        [
            rec(tid(70), sid(1), name="agent"),
            rec(tid(70), sid(2), parent=sid(1), kind=gen, model="router-model", start_s=0.1),
            rec(tid(70), sid(3), parent=sid(1), kind=gen, model="answer-model", start_s=0.2),
            rec(tid(71), sid(4), kind=gen, model="answer-model", start_s=1),
            rec(tid(72), sid(5), kind=gen, model="other-model", start_s=2),
        ]
    )

    def ids(model: str) -> list[str]:
        return [s.trace.id for s in store.list_traces("p1", TraceQuery(model=model, limit=10)).data]

    assert ids("answer-model") == [tid(71), tid(70)]
    assert ids("router-model") == [tid(70)]
    assert ids("other-model") == [tid(72)]
    assert ids("no-such-model") == []


def test_long_texts_round_trip_and_are_searchable(store: SqlStore) -> None:
    # Sizes either side of each packing threshold on SQLite (kept, lz4 block, zstd frame).
    long_in = "prompt " * 300 + "needle-in-the-haystack"
    long_out = "é answer ✓ " * 200
    huge = "context " * 2000 + "second-needle"
    store.write_spans(
        [
            rec(tid(50), sid(1), input=long_in, output=long_out),
            rec(tid(51), sid(2), input="x" * (PACK_MIN_CHARS - 1), output=huge, start_s=1),
        ]
    )
    detail = store.get_trace("p1", tid(50))
    assert detail is not None
    assert detail.observations[0].input == long_in and detail.observations[0].output == long_out
    assert detail.trace.input == long_in
    page = store.list_traces("p1", TraceQuery(search="needle-in-the"))
    assert [s.trace.id for s in page.data] == [tid(50)]
    assert page.data[0].output_preview is not None and page.data[0].output_preview.startswith("é answer ✓")
    other = store.get_trace("p1", tid(51))
    assert other is not None and other.observations[0].output == huge
    assert other.observations[0].input == "x" * (PACK_MIN_CHARS - 1)
    assert [s.trace.id for s in store.list_traces("p1", TraceQuery(search="SECOND-needle")).data] == [tid(51)]


def test_texts_packed_by_earlier_versions_still_read(sqlite_store: SqlStore) -> None:
    # Before lz4, SQLite stores held every long text as a zstd frame; unpack tells the two apart.
    text = "an earlier answer " * 40
    sqlite_store.write_spans([rec(tid(60), sid(1), output="placeholder")])
    frame = zstandard.ZstdCompressor(level=1).compress(text.encode())
    with sqlite_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE spans SET output = ?", (frame,))
    detail = sqlite_store.get_trace("p1", tid(60))
    assert detail is not None and detail.observations[0].output == text
    # (the search reads its index, made from the texts as they were written: tests/store/test_search.py)
    page = sqlite_store.list_traces("p1", TraceQuery())
    assert [s.trace.id for s in page.data] == [tid(60)]
    assert page.data[0].output_preview is not None and page.data[0].output_preview.startswith(
        "an earlier answer"
    )
    assert unpack(pack(text)) == text and isinstance(pack(text), bytes) and pack(text) != frame


def test_nulls_and_packed_texts_are_bound_as_null_and_blob(sqlite_store: SqlStore) -> None:
    # The store registers sqlite3 adapters for None and bytes that return the value itself (faster
    # binding): what lands in the file must stay NULL and BLOB.
    sqlite_store.write_spans([rec(tid(61), sid(1), output="y" * PACK_MIN_CHARS)])
    with sqlite_store.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT typeof(parent_id), typeof(output) FROM spans").one()
    assert tuple(row) == ("null", "blob")
    detail = sqlite_store.get_trace("p1", tid(61))
    assert detail is not None and detail.observations[0].output == "y" * PACK_MIN_CHARS


def test_reads_are_scoped_to_the_project(store: SqlStore) -> None:
    store.write_spans([rec(tid(9), sid(1), project="other")])
    assert store.get_trace("p1", tid(9)) is None
    assert store.list_traces("p1", TraceQuery()).data == []
    assert store.get_trace("other", tid(9)) is not None
    assert not store.observation_exists("p1", tid(9), None)


def test_scores_attach_to_traces(store: SqlStore) -> None:
    store.write_spans([rec(tid(4), sid(1))])
    store.add_scores("p1", [make_score(trace_id=tid(4), name="correct", value=True, comment="ok")])
    store.add_scores("p1", [make_score(trace_id=tid(4), observation_id=sid(1), name="quality", value=0.5)])
    detail = store.get_trace("p1", tid(4))
    assert detail is not None
    assert [(s.name, s.value, s.string_value) for s in detail.scores] == [
        ("correct", 1.0, "true"),
        ("quality", 0.5, None),
    ]


def test_sessions_group_traces(store: SqlStore) -> None:
    store.write_spans(
        [
            rec(tid(20), sid(1), start_s=1, session_id="a", user_id="u"),
            rec(tid(21), sid(1), start_s=5, session_id="a", user_id="u"),
            rec(tid(22), sid(1), start_s=3, session_id="b"),
            rec(tid(23), sid(1), start_s=4),
        ]
    )
    page = store.list_sessions("p1", limit=1)
    assert [s.session_id for s in page.data] == ["a"]
    assert page.data[0].trace_count == 2 and page.data[0].user_ids == ("u",)
    assert page.next_cursor is not None
    rest = store.list_sessions("p1", limit=10, cursor=decode_cursor(page.next_cursor))
    assert [s.session_id for s in rest.data] == ["b"]


def test_model_metrics_come_from_rollups(store: SqlStore) -> None:
    records = [
        rec(
            tid(200 + i),
            sid(1),
            name="chat",
            kind=ObservationKind.GENERATION,
            model="gpt-4o" if i < 100 else "claude",
            usage=Usage(input=10, output=5, cache_read=1, reasoning=2),
            start_s=i * 30,  # 100 calls of gpt-4o over 50 minutes
            ms=float(i % 100 + 1),  # latencies 1..100 ms
            status=Status.ERROR if i == 0 else Status.OK,
            cost=Cost({"input": Money.from_usd("0.01")}) if i < 150 else None,
        )
        for i in range(200)
    ]
    # Written in two batches: the rollups add up.
    store.write_spans(records[:77])
    store.write_spans(records[77:])
    start_s = T0 // 10**9
    rows = store.model_metrics("p1", start_s - 3600, start_s + 86400, 86400)
    by_model = {r.model: r for r in rows}
    gpt = by_model["gpt-4o"].sums
    assert gpt.count == 100 and gpt.errors == 1
    assert gpt.input_tokens == 1000 and gpt.output_tokens == 500 and gpt.cache_read_tokens == 100
    assert gpt.reasoning_tokens == 200
    assert gpt.cost_usd == Money.from_usd("1")  # 100 x $0.01, exactly
    assert gpt.latency_ms_avg == pytest.approx(50.5)
    assert by_model["gpt-4o"].latency_ms_p50 == pytest.approx(50, rel=0.08)
    assert by_model["gpt-4o"].latency_ms_p95 == pytest.approx(95, rel=0.08)
    claude = by_model["claude"].sums
    assert claude.unpriced == 50 and claude.cost_usd == Money.from_usd("0.5")
    minute_rows = store.model_metrics("p1", start_s, start_s + 120, 60)
    assert sum(r.sums.count for r in minute_rows if r.model == "gpt-4o") == 4  # calls at 0, 30, 60, 90 s


def test_api_keys_are_hashed_and_revocable(store: SqlStore) -> None:
    key, secret = store.create_api_key("p1", "ci", frozenset(DEFAULT_SCOPES))
    assert secret.startswith("ph-") and key.prefix == secret[:10]
    found = store.find_api_key(secret)
    assert found is not None and found.project_id == "p1" and found.allows(Scope.INGEST)
    assert not found.allows(Scope.ADMIN)
    from sqlalchemy import select

    from pilothouse.store.tables import api_keys

    with store.engine.connect() as conn:
        stored = conn.execute(select(api_keys.c.secret_hash, api_keys.c.prefix)).one()
    assert secret not in stored.secret_hash and len(stored.secret_hash) == 64
    assert store.revoke_api_key(key.id)
    revoked = store.find_api_key(secret)
    assert revoked is not None and not revoked.active and not revoked.allows(Scope.READ)
    assert not store.revoke_api_key(key.id)
    assert store.find_api_key("ph-wrong") is None


def test_many_spans_in_one_batch(store: SqlStore) -> None:
    n = 3000
    trace = os.urandom(16).hex()
    records = [
        rec(trace, f"{i + 1:016x}", parent=None if i == 0 else sid(1), start_s=i / 1000) for i in range(n)
    ]
    store.write_spans(records)
    detail = store.get_trace("p1", trace)
    assert detail is not None and detail.trace.observation_count == n


def test_chunks_of_one_write_merge_and_dedupe_across_chunks(store: SqlStore) -> None:
    child = rec(
        tid(9),
        sid(2),
        parent=sid(1),
        kind=ObservationKind.GENERATION,
        model="m",
        usage=Usage(input=4, output=1),
    )
    root = rec(tid(9), sid(1), name="agent", ms=200)
    others = [rec(tid(100 + i), sid(1)) for i in range(3)]
    store.write_span_chunks(iter([[child, others[0]], [root, child, others[1]], [others[2]]]))
    assert store.count_spans("p1") == 5  # the child repeated in a later chunk is stored once
    detail = store.get_trace("p1", tid(9))
    assert detail is not None
    assert detail.trace.name == "agent" and detail.trace.observation_count == 2
    assert detail.trace.usage.total == 5


def test_a_failing_chunk_on_sqlite_stores_nothing_of_the_batch(sqlite_store: SqlStore) -> None:
    def chunks() -> Iterator[list[SpanRecord]]:
        yield [rec(tid(20), sid(1))]
        raise RuntimeError("the second chunk could not be made")

    with pytest.raises(RuntimeError):
        sqlite_store.write_span_chunks(chunks())
    assert sqlite_store.count_spans("p1") == 0  # one transaction: the first chunk is rolled back
    sqlite_store.write_span_chunks(iter([[rec(tid(20), sid(1))]]))
    assert sqlite_store.count_spans("p1") == 1


def test_one_trace_id_in_two_projects_stays_two_traces(store: SqlStore) -> None:
    store.write_spans(
        [rec(tid(11), sid(1), name="a", input="in a"), rec(tid(11), sid(1), name="b", project="p2")]
    )
    store.write_spans([rec(tid(11), sid(2), parent=sid(1), name="a child")])  # a later batch, one project
    mine, theirs = store.get_trace("p1", tid(11)), store.get_trace("p2", tid(11))
    assert mine is not None and theirs is not None
    assert [o.name for o in mine.observations] == ["a", "a child"]
    assert [o.name for o in theirs.observations] == ["b"]
    assert mine.trace.input == "in a" and mine.trace.observation_count == 2
    assert store.observation_exists("p1", tid(11), sid(2)) and not store.observation_exists(
        "p2", tid(11), sid(2)
    )
    assert store.count_spans() == 3


@pytest.mark.parametrize("sorted_above", [10**9, 0])
def test_each_span_refers_to_its_own_trace_in_either_write_order(
    sqlite_store: SqlStore, monkeypatch: pytest.MonkeyPatch, sorted_above: int
) -> None:
    """New traces get their keys in the batch's order; a large store writes the trace rows in trace-id
    order (here from the first trace on): either way every span lands in its own trace."""
    import pilothouse.store.sql as sql

    monkeypatch.setattr(sql, "_SORTED_UPSERT_TRACES", sorted_above)
    sqlite_store.write_spans([rec(tid(500), sid(1), name="stored first")])
    ids = [500, 7, 900, 3, 42]  # not in id order; 500 is stored already
    batch = [rec(tid(n), sid(2), name=f"t{n} a", parent=sid(1) if n == 500 else None) for n in ids]
    batch += [rec(tid(n), sid(3), parent=sid(2), name=f"t{n} b") for n in reversed(ids)]
    sqlite_store.write_spans(batch)
    for n in ids:
        detail = sqlite_store.get_trace("p1", tid(n))
        assert detail is not None
        names = sorted(o.name for o in detail.observations)
        expected = [f"t{n} a", f"t{n} b"] + (["stored first"] if n == 500 else [])
        assert names == sorted(expected)
        assert detail.trace.observation_count == len(expected)


def test_sqlite_file_is_private_to_its_owner(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    """Issue 21 class 10: every trace is in the SQLite file, so a file we create is 0600 (its -wal and
    -shm files too) in a folder we create 0700, whatever the umask; an existing readable file is
    kept as it is, with a warning."""
    import stat

    old_umask = os.umask(0o022)
    try:
        home = tmp_path / "home" / ".pilothouse"
        store = SqlStore.from_url(f"sqlite:///{home / 'pilothouse.db'}")
        store.write_spans([rec("a" * 32, "b" * 16)])
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.iterdir()}
        store.close()
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert modes["pilothouse.db"] == 0o600
        assert all(mode == 0o600 for name, mode in modes.items() if name.startswith("pilothouse.db"))

        shared = tmp_path / "shared.db"
        shared.touch(mode=0o644)
        SqlStore.from_url(f"sqlite:///{shared}").close()
        assert stat.S_IMODE(shared.stat().st_mode) == 0o644
        assert "can be read by other users" in caplog.text
    finally:
        os.umask(old_umask)


def test_the_default_database_made_readable_by_older_versions_is_tightened(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 21 class 10: the default SQLite file in Pilothouse's home folder, created 0644 in a 0755
    folder by an earlier version, is made 0600 in a 0700 folder when the server opens it."""
    import stat

    from starlette.testclient import TestClient

    from pilothouse.server import Settings, create_app

    home = tmp_path / ".pilothouse"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    SqlStore.from_url(f"sqlite:///{home / 'pilothouse.db'}").close()
    os.chmod(home / "pilothouse.db", 0o644)
    with TestClient(create_app(Settings(home=home))) as client:
        assert client.get("/health").status_code == 200
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "pilothouse.db").stat().st_mode) == 0o600
