"""Migration 0034 (PostgreSQL): the traces' indexed text columns in the "C" collation, and the traces'
search index with a 256 kB pending list. The same traces are found by the same queries, through the
same indexes, before and after, and after its downgrade."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from pilothouse.domain.queries import TraceQuery
from pilothouse.store.activity import _grouped, _walk
from pilothouse.store.engine import make_engine
from pilothouse.store.sql import SqlStore
from pilothouse.store.trace_list import trace_list_statement
from tests.conftest import _clean
from tests.store.test_migrations import _migrate
from tests.store.test_store import T0, rec, sid, tid

C_COLUMNS = ["environment", "id", "project_id", "release", "session_id", "user_id"]
USERS = ["alice", "Bob", "_x", "bob", "Émile", "zoë", "a-b", "a.b"]  # case, punctuation, non-ASCII


def _collations(store: SqlStore) -> dict[str, str]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.attname, c.collname FROM pg_attribute a "
                "JOIN pg_collation c ON c.oid = a.attcollation "
                "WHERE a.attrelid = 'traces'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
            )
        ).all()
    return {name: collation for name, collation in rows}


def _search_index_options(store: SqlStore) -> list[str] | None:
    with store.engine.connect() as conn:
        options: list[str] | None = conn.execute(
            text("SELECT reloptions FROM pg_class WHERE oid = 'ix_traces_search'::regclass")
        ).scalar_one()
    return options


# What the pages and the writer ask of the traces' indexes, and the index each must go through
PLANS = {
    "uq_traces_id": ("SELECT pk FROM traces WHERE project_id = 'p1' AND id = :v", tid(3)),
    "uq_traces_id ": (  # the writer's look-up of a batch's trace ids (pg_copy._STORED_TRACES)
        "SELECT t.pk FROM unnest(CAST(:v AS text[])) AS q(id), LATERAL "
        "(SELECT * FROM traces WHERE project_id = 'p1' AND id = q.id OFFSET 0) t",
        [tid(1), tid(2)],
    ),
    "ix_traces_user": (
        "SELECT pk FROM traces WHERE project_id = 'p1' AND user_id = :v "
        "ORDER BY start_ns DESC, pk DESC LIMIT 50",
        "Bob",
    ),
    "ix_traces_session": (
        "SELECT pk FROM traces WHERE project_id = 'p1' AND session_id = :v ORDER BY start_ns DESC LIMIT 50",
        "s1",
    ),
    "ix_traces_environment": (
        "SELECT pk FROM traces WHERE project_id = 'p1' AND environment = :v ORDER BY start_ns DESC LIMIT 50",
        "prod",
    ),
    "ix_traces_time": (
        "SELECT pk FROM traces WHERE project_id = :v ORDER BY start_ns DESC, pk DESC LIMIT 50",
        "p1",
    ),
    "ix_traces_cost": ("SELECT pk FROM traces WHERE project_id = :v ORDER BY cost_usd DESC LIMIT 50", "p1"),
}


def _plans_use_their_indexes(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        conn.execute(text("ANALYZE traces"))  # without statistics the planner may take any index
        conn.execute(text("SET enable_seqscan = off"))
        for index, (sql, value) in PLANS.items():
            plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}"), {"v": value}))
            assert index.strip() in plan, plan


def _write(store: SqlStore, first: int) -> None:
    store.write_spans(
        [
            rec(tid(first + i), sid(1), start_s=i, user_id=user, session_id=f"s{i % 2}", environment="prod")
            for i, user in enumerate(USERS)
        ]
    )


def _found(store: SqlStore) -> dict[str, list[str]]:
    def ids(query: TraceQuery) -> list[str]:
        return [s.trace.id for s in store.list_traces("p1", query).data]

    # a trace looked up by its id (the scores' author column, migration 0035, is not there at 0033)
    found = store.observation_exists("p1", tid(3), None)
    return {
        "Bob": ids(TraceQuery(user_id="Bob")),
        "s1": ids(TraceQuery(session_id="s1")),
        "prod": ids(TraceQuery(environment="prod")),
        "by id": [tid(3)] if found else [],
    }


def test_migration_0034_keeps_what_is_found_and_the_indexes_that_find_it(empty_pg_url: str) -> None:
    _migrate(empty_pg_url, "0033")
    store = SqlStore(make_engine(empty_pg_url))
    try:
        _write(store, 1)
        assert {_collations(store)[c] for c in C_COLUMNS} == {"default"}
        assert _search_index_options(store) is None
        before = _found(store)
        _plans_use_their_indexes(store)
    finally:
        store.close()

    _migrate(empty_pg_url, "head")
    store = SqlStore.from_url(empty_pg_url)
    try:
        collations = _collations(store)
        assert {c for c, collation in collations.items() if collation == "C"} == set(C_COLUMNS)
        assert _search_index_options(store) == ["gin_pending_list_limit=256"]
        assert _found(store) == before
        assert before["Bob"] == [tid(2)] and len(before["prod"]) == len(USERS)
        _plans_use_their_indexes(store)
        _write(store, 101)  # written after it, found with those before
        assert sorted(_found(store)["Bob"]) == [tid(2), tid(102)]
    finally:
        store.close()

    _migrate(empty_pg_url, "0033", down=True)
    store = SqlStore(make_engine(empty_pg_url))
    try:
        assert {_collations(store)[c] for c in C_COLUMNS} == {"default"}
        assert _search_index_options(store) is None
        assert sorted(_found(store)["Bob"]) == [tid(2), tid(102)]
        _plans_use_their_indexes(store)
    finally:
        store.close()


@pytest.fixture
def pg_store_at_head(pg_server: str) -> Iterator[SqlStore]:
    store = SqlStore.from_url(pg_server)
    _clean(store)
    yield store
    store.close()


def test_the_users_page_orders_ids_as_its_walk_does(pg_store_at_head: SqlStore) -> None:
    """Ids of traces that started at the same time come by id, descending, in code point order, both
    when the page walks the newest traces (ordered in Python) and when it groups the range in SQL
    (ordered by the column's collation, "C")."""
    store = pg_store_at_head
    store.write_spans([rec(tid(i + 1), sid(1), user_id=user) for i, user in enumerate(USERS)])
    with store.engine.connect() as conn:
        walked = _walk(conn, "p1", "user_id", T0, T0 + 10**9, len(USERS))
        grouped = _grouped(conn, "p1", "user_id", T0, T0 + 10**9, len(USERS), None)
    assert walked is not None
    assert [u for u, _ in walked] == [u for u, _ in grouped] == sorted(USERS, reverse=True)


def test_the_score_filter_finds_each_traces_scores_by_their_index(pg_store_at_head: SqlStore) -> None:
    """The trace list's score filter probes the scores of each trace it walks by the scores' (project,
    trace id) index, whose collation is the default, not the traces' id's "C": a comparison in "C"
    could not use it (the plan then reads every score of the name into a hash)."""
    store = pg_store_at_head
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO traces (project_id, id, start_ns, end_ns, observation_count, error_count, "
                "input_tokens, output_tokens, total_tokens, cost_usd, unpriced_count) "
                "SELECT 'p1', md5(i::text), i, i, 1, 0, 0, 0, 0, 0, 0 FROM generate_series(1, 20000) i"
            )
        )
        conn.execute(
            text(
                "INSERT INTO scores (id, project_id, trace_id, name, data_type, value, source, created_ns) "
                "SELECT md5(i::text), 'p1', md5((i * 7)::text), CASE WHEN i % 2 = 0 THEN 'q' ELSE 'r' END, "
                "'numeric', 1, 'api', i FROM generate_series(1, 20000) i"
            )
        )
        conn.execute(text("ANALYZE traces"))
        conn.execute(text("ANALYZE scores"))
    stmt = trace_list_statement("p1", TraceQuery(score_name="q"), sqlite=False)
    sql = stmt.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True})
    with store.engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}")))
    assert "Index Scan using ix_scores_trace" in plan and "(trace_id)::text = " in plan, plan
    assert "Hash" not in plan, plan
    found = store.list_traces("p1", TraceQuery(score_name="q"))
    assert len(found.data) == 50
