"""The Alembic migrations build exactly the schema of ``store/tables.py``, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text

from pilothouse.domain.queries import TraceQuery
from pilothouse.domain.traces import Observation, SpanRecord, TraceAttributes
from pilothouse.store.engine import make_engine
from pilothouse.store.rows import pack
from pilothouse.store.sql import SqlStore
from pilothouse.store.tables import SEARCH_OBJECTS, metadata

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _partitioning(diff: object) -> bool:
    """A difference that spans' partitioning on PostgreSQL makes (migration 0027): the unique key holds
    the partition key (start_ns) and the span key has no primary key index."""
    if not isinstance(diff, tuple) or diff[0] not in ("add_constraint", "remove_constraint"):
        return False
    constraint = diff[1]
    return constraint.table.name == "spans" and {c.name for c in constraint.columns} in (
        {"trace_pk", "span_id"},
        {"trace_pk", "span_id", "start_ns"},
        {"pk"},
    )


def test_migrations_match_the_tables(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": _not_search_index})
        diff = compare_metadata(context, metadata)
    if store.dialect == "postgresql":
        assert sum(map(_partitioning, diff)) == 2  # the spans' two unique keys
        diff = [d for d in diff if not _partitioning(d)]
    assert diff == []


def _not_search_index(obj: object, name: str | None, kind: str, reflected: bool, other: object) -> bool:
    """The full-text index (migration 0022) is no table of store/tables.py: SQL of its own reads it."""
    return name not in SEARCH_OBJECTS


def _schema(engine: Engine) -> dict[str, object]:
    """Every table's columns (name, type, nullable, default), primary key, indexes, unique constraints and
    foreign keys, as the database reports them."""
    from sqlalchemy import inspect

    found = inspect(engine)
    return {
        table: (
            [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in found.get_columns(table)
            ],
            found.get_pk_constraint(table)["constrained_columns"],
            sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in found.get_indexes(table)
            ),
            sorted((u["name"] or "", tuple(u["column_names"])) for u in found.get_unique_constraints(table)),
            sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in found.get_foreign_keys(table)
            ),
        )
        for table in sorted(found.get_table_names())
    }


def _rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in metadata.sorted_tables
        }


def test_upgrade_is_idempotent(empty_url: str) -> None:
    """Upgrading a database already at head, by start-up's check and by Alembic itself, changes nothing:
    the revision stays at head, the schema is the same, and stored rows stay."""
    from pilothouse.domain.keys import DEFAULT_SCOPES
    from pilothouse.store.engine import current_revision, head_revision, upgrade_schema

    store = SqlStore.from_url(empty_url)  # a new database: every migration runs
    try:
        store.write_spans(
            [
                SpanRecord(
                    "p1",
                    Observation(trace_id="c" * 32, id="1" * 16, name="op", start_ns=1, end_ns=2),
                    TraceAttributes(),
                )
            ]
        )
        _, secret = store.create_api_key("p1", "kept", frozenset(DEFAULT_SCOPES))
        schema, rows = _schema(store.engine), _rows(store.engine)
        assert current_revision(store.engine) == head_revision()
        assert rows["spans"] == 1 and rows["api_keys"] == 1

        upgrade_schema(store.engine)  # start-up's upgrade: at head, nothing to do
        _migrate(empty_url, "head")  # Alembic's own upgrade to head, past start-up's check
        upgrade_schema(store.engine)

        assert current_revision(store.engine) == head_revision()
        assert _schema(store.engine) == schema
        assert _rows(store.engine) == rows
        detail = store.get_trace("p1", "c" * 32)
        assert detail is not None and [o.name for o in detail.observations] == ["op"]
        assert store.find_api_key(secret) is not None
    finally:
        store.close()


def test_head_revision_is_alembics_head(store: SqlStore) -> None:
    """Start-up skips Alembic when the database is at head_revision(): it must be Alembic's head."""
    from importlib import resources

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from pilothouse.store.engine import current_revision, head_revision

    config = Config()
    config.set_main_option("script_location", str(resources.files("pilothouse.store") / "migrations"))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()
    assert current_revision(store.engine) == head_revision()


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    from pilothouse.store.engine import make_engine

    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(resources.files("pilothouse.store") / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database (no migration applied)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    yield request.getfixturevalue("empty_pg_url")


def test_trace_keys_migration_keeps_every_span_with_its_trace(empty_url: str) -> None:
    """0008 (spans refer to their trace by its integer key) carries stored traces and spans over,
    and the same trace id in two projects stays two traces; its downgrade restores them."""
    _migrate(empty_url, "0007")
    trace_cols = (
        "project_id, id, name, start_ns, end_ns, observation_count, error_count, input_tokens, "
        "output_tokens, total_tokens, cost_usd, unpriced_count"
    )
    span_cols = "project_id, trace_id, span_id, parent_id, kind, name, start_ns, end_ns, status"
    engine = make_engine(empty_url)
    with engine.begin() as conn:
        for project, name in (("p1", "mine"), ("p2", "theirs")):
            conn.execute(
                text(f"INSERT INTO traces ({trace_cols}) VALUES (:p, :t, :n, 1, 2, 2, 0, 0, 0, 0, 0, 0)"),
                {"p": project, "t": "a" * 32, "n": name},
            )
            for span, parent in (("1" * 16, None), ("2" * 16, "1" * 16)):
                conn.execute(
                    text(
                        f"INSERT INTO spans ({span_cols}) "
                        "VALUES (:p, :t, :s, :parent, 'span', :n, 1, 2, 'ok')"
                    ),
                    {"p": project, "t": "a" * 32, "s": span, "parent": parent, "n": f"{name} {span[0]}"},
                )
    engine.dispose()

    _migrate(empty_url, "head")
    store = SqlStore.from_url(empty_url)
    try:
        for project, name in (("p1", "mine"), ("p2", "theirs")):
            detail = store.get_trace(project, "a" * 32)
            assert detail is not None and detail.trace.name == name
            assert [(o.name, o.trace_id) for o in detail.observations] == [
                (f"{name} 1", "a" * 32),
                (f"{name} 2", "a" * 32),
            ]
        # a retried export of a migrated span is still recognised as stored
        detail = store.get_trace("p1", "a" * 32)
        assert detail is not None
        store.write_spans([SpanRecord("p1", detail.observations[0], TraceAttributes())])
        assert store.count_spans("p1") == 2
    finally:
        store.close()

    _migrate(empty_url, "0007", down=True)
    engine = make_engine(empty_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT project_id, trace_id, name FROM spans ORDER BY project_id, name")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("p1", "a" * 32, "mine 1"),
        ("p1", "a" * 32, "mine 2"),
        ("p2", "a" * 32, "theirs 1"),
        ("p2", "a" * 32, "theirs 2"),
    ]


def test_downgrade_from_0009_repacks_texts_for_the_code_before_it(tmp_path: Path) -> None:
    """SQLite texts packed as lz4 (0009's version on) are re-packed as zstd frames on the way down,
    the only packing the code before it reads; texts already zstd-packed stay as they are."""
    url = f"sqlite:///{tmp_path / 'lz4.db'}"
    mid, long = "a middle-sized answer " * 30, "a long context " * 400
    store = SqlStore.from_url(url)
    try:
        store.write_spans(
            [
                SpanRecord(
                    "p1",
                    Observation(
                        trace_id="b" * 32,
                        id="1" * 16,
                        name="op",
                        start_ns=1,
                        end_ns=2,
                        input=mid,
                        output=long,
                    ),
                    TraceAttributes(),
                )
            ]
        )
        with store.engine.connect() as conn:
            before = conn.execute(text("SELECT input, output FROM spans")).one()
    finally:
        store.close()
    assert before[0][:4] != ZSTD_MAGIC and before[1][:4] == ZSTD_MAGIC

    _migrate(url, "0008", down=True)
    engine = make_engine(url)
    with engine.connect() as conn:
        packed_in, packed_out = conn.execute(text("SELECT input, output FROM spans")).one()
    engine.dispose()
    assert packed_in[:4] == ZSTD_MAGIC
    assert zstandard.ZstdDecompressor().decompress(packed_in).decode() == mid
    assert packed_out == before[1]


def test_search_migration_indexes_stored_spans(empty_url: str) -> None:
    """0022 indexes the spans (and traces) stored before it, so the search finds them; spans written
    after it are indexed at ingest; its downgrade removes the index."""
    _migrate(empty_url, "0021")
    engine = make_engine(empty_url)
    sqlite = engine.dialect.name == "sqlite"
    long_input = "a pelican " + "x" * 600  # packed (compressed) on SQLite
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO traces (project_id, id, name, metadata, start_ns, end_ns, observation_count, "
                "error_count, input_tokens, output_tokens, total_tokens, cost_usd, unpriced_count) "
                "VALUES ('p', :id, 'old-step', :meta, 1, 2, 1, 0, 0, 0, 0, 0, 0)"
            ),
            {"id": "a" * 32, "meta": '{"team": "osprey"}'},
        )
        pk = conn.execute(text("SELECT pk FROM traces")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO spans (project_id, trace_pk, span_id, kind, name, start_ns, end_ns, status, "
                "input) VALUES ('p', :pk, :span, 'span', 'old-step', 1, 2, 'ok', :input)"
            ),
            {"pk": pk, "span": "1" * 16, "input": pack(long_input) if sqlite else long_input},
        )
    engine.dispose()
    _migrate(empty_url, "head")
    store = SqlStore.from_url(empty_url)
    try:
        for word in ("pelican", "osprey", "old"):
            assert [s.trace.id for s in store.list_traces("p", TraceQuery(search=word)).data] == ["a" * 32]
        new = Observation("b" * 32, "2" * 16, "new-step", 3, 4, output="a heron")
        store.write_spans([SpanRecord("p", new, TraceAttributes())])
        assert [s.trace.id for s in store.list_traces("p", TraceQuery(search="heron")).data] == ["b" * 32]
    finally:
        store.close()
    _migrate(empty_url, "0021", down=True)
    _migrate(empty_url, "head")


def _index_sql(url: str) -> str:
    engine = make_engine(url)
    with engine.connect() as conn:
        sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'span_search'")).scalar_one()
    engine.dispose()
    return str(sql)


def test_prefix_index_migration_finds_what_the_search_found_before(tmp_path: Path) -> None:
    """0028 (SQLite) makes the full-text index again with prefix lists of 1 and 2 characters and indexes
    the stored spans anew: every search, prefixes above all, finds the same traces as before it; spans
    written after it are found; its downgrade makes the index without them, finding the same again."""
    url = f"sqlite:///{tmp_path / 'prefix.db'}"
    _migrate(url, "0027")
    words = ["apple", "apricot", "avocado", "banana", "blueberry", "ébène", "a1", "12", "123", "1234"]
    records = []
    for i in range(60):
        text_ = " ".join(words[j % len(words)] for j in range(i % 7, i % 7 + 1 + i % 4))
        observation = Observation(f"{i:032x}", f"{i + 1:016x}", f"step{i % 3}", i, i + 1, input=text_)
        meta = {"team": "osprey"} if i % 11 == 0 else {}
        records.append(SpanRecord("p", observation, TraceAttributes(name=f"job{i % 5}", metadata=meta)))
    queries = ["a*", "ap*", "apr*", "b*", "é*", "eb*", "1*", "12*", "123*", "s*", "st*", "apple b*"]
    queries += ["j*", "o*", "osprey", "x*", "banana", "1234"]

    def found(store: SqlStore) -> dict[str, list[str]]:
        return {
            q: [s.trace.id for s in store.list_traces("p", TraceQuery(search=q, limit=100)).data]
            for q in queries
        }

    old = SqlStore.from_url(url, migrate=False)
    try:
        old.write_spans(records)
        before = found(old)
    finally:
        old.close()
    assert "prefix" not in _index_sql(url)
    assert len(before["a*"]) > 30 and before["x*"] == [] and before["o*"] == before["osprey"] != []

    _migrate(url, "head")
    assert "prefix='1 2'" in _index_sql(url)
    store = SqlStore.from_url(url)
    try:
        assert found(store) == before
        new = Observation("f" * 32, "f" * 16, "late", 100, 101, output="apiary zz")
        store.write_spans([SpanRecord("p", new, TraceAttributes())])
        assert [s.trace.id for s in store.list_traces("p", TraceQuery(search="zz*")).data] == ["f" * 32]
        assert store.list_traces("p", TraceQuery(search="ap*", limit=100)).data[0].trace.id == "f" * 32
    finally:
        store.close()

    _migrate(url, "0027", down=True)
    assert "prefix" not in _index_sql(url)
    old = SqlStore.from_url(url, migrate=False)
    try:
        after = found(old)
        assert after["a*"] == ["f" * 32, *before["a*"]]
        assert {q: ids for q, ids in after.items() if q != "a*" and not q.startswith("ap")} == {
            q: ids for q, ids in before.items() if q != "a*" and not q.startswith("ap")
        }
    finally:
        old.close()


def test_score_details_migration_keeps_old_scores_readable(empty_url: str) -> None:
    """0031 adds ``eval_scores.details``: scores stored before it read back without details (their runs
    render as before), new ones keep theirs; its downgrade drops the column and keeps the scores."""
    from pilothouse.domain.evals import EvalResult, ScoreRecord
    from pilothouse.store.evals import EvalStore

    _migrate(empty_url, "0030")
    engine = make_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO eval_results (run_id, item_id, epoch, position, output, cached, created_ns) "
                "VALUES ('old', 'i1', 0, 1, 'Paris', :false, 1)"
            ),
            {"false": False},
        )
        conn.execute(
            text(
                "INSERT INTO eval_scores (run_id, scorer, item_id, epoch, value, passed, reason) "
                "VALUES ('old', 'faithful', 'i1', 0, 0.25, :false, 'unsupported: a number')"
            ),
            {"false": False},
        )
    engine.dispose()

    _migrate(empty_url, "head")
    store = SqlStore.from_url(empty_url)
    try:
        evals = EvalStore(store)
        (old,) = evals.iter_results("old")
        assert old.scores == (ScoreRecord("faithful", 0.25, False, None, "unsupported: a number"),)
        details = {"spans": [{"start": 0, "end": 5, "text": "Paris"}], "judge_called": True}
        new = EvalResult(
            "new", "i1", 0, 1, "Paris", scores=(ScoreRecord("faithful", 0.0, False, details=details),)
        )
        evals.write_results([new])
        assert [r.scores for r in evals.iter_results("new")] == [new.scores]
    finally:
        store.close()

    _migrate(empty_url, "0030", down=True)
    engine = make_engine(empty_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT run_id, value FROM eval_scores ORDER BY run_id")).all()
            columns = {c["name"] for c in inspect(conn).get_columns("eval_scores")}
        assert [tuple(r) for r in rows] == [("new", 0.0), ("old", 0.25)] and "details" not in columns
    finally:
        engine.dispose()


def test_servers_started_together_migrate_a_new_database_once(empty_pg_url: str) -> None:
    """Two servers started at once on a new PostgreSQL database (docs/deploy.md's two ports) both
    migrate it: one after the other under an advisory lock, not both at once (the second failed with
    a duplicate key in ``pg_type``)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from pilothouse.store.engine import current_revision, head_revision, upgrade_schema

    engines = [make_engine(empty_pg_url) for _ in range(3)]
    together = Barrier(len(engines))

    def start(engine: Engine) -> None:
        together.wait()
        upgrade_schema(engine)

    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            for done in [pool.submit(start, engine) for engine in engines]:
                done.result()  # each upgrade returned without an error
        assert current_revision(engines[0]) == head_revision()
    finally:
        for engine in engines:
            engine.dispose()
