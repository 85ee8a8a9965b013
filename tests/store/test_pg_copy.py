"""PostgreSQL's binary COPY writes (spans, trace summaries, rollups) store exactly what the row-by-row
INSERT statements stored."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from pilothouse.domain.money import Money
from pilothouse.domain.traces import Cost, ObservationKind, Status, Usage
from pilothouse.store.sql import SqlStore
from tests.conftest import _clean
from tests.store.test_store import T0, rec, sid, tid


@pytest.fixture
def pg_store(pg_server: str) -> Iterator[SqlStore]:
    store = SqlStore.from_url(pg_server)
    _clean(store)
    yield store
    store.close()


def _batch() -> list:  # type: ignore[type-arg]
    return [
        rec(tid(1), sid(1), name="root", user_id="u1", tags=("a", "b")),
        rec(
            tid(1),
            sid(2),
            parent=sid(1),
            kind=ObservationKind.GENERATION,
            model="gpt-4o-mini",
            usage=Usage(input=12, output=3),
            cost=Cost({"input": Money.from_usd(0.25), "output": Money.from_usd(0.5)}, "v1"),
            input="ünïcode " * 400,  # long text, NUL-free, multi-byte
            output="",
            status=Status.ERROR,
        ),
        rec(tid(2), sid(1), start_s=1.5, input=None, output=None),
    ]


def _stored(store: SqlStore) -> list[object]:
    """The traces with their spans, and the rollups the dashboards read."""
    details = [store.get_trace("p1", tid(n)) for n in (1, 2)]
    metrics = store.model_metrics("p1", T0 // 10**9 - 60, T0 // 10**9 + 60, 60)
    return [(d.trace, sorted(d.observations, key=lambda o: o.id)) for d in details if d is not None] + [
        metrics
    ]


def test_copy_and_insert_paths_store_the_same(pg_store: SqlStore) -> None:
    pg_store.copy_spans = False
    pg_store.write_spans(_batch())
    by_insert = _stored(pg_store)
    _clean(pg_store)
    pg_store.copy_spans = True
    pg_store.write_spans(_batch())
    pg_store.write_spans(_batch()[1:])  # a retried export: skipped, counted once
    by_copy = _stored(pg_store)
    assert len(by_copy) == 3 and by_copy == by_insert
    assert pg_store.count_spans("p1") == 3
    (metrics,) = pg_store.model_metrics("p1", T0 // 10**9 - 60, T0 // 10**9 + 60, 60)
    assert metrics.sums.input_tokens == 12


def _rollup_tables(store: SqlStore) -> dict[str, list[tuple[object, ...]]]:
    """Every rollup table's rows, histograms included, in key order."""
    with store.engine.connect() as conn:
        return {
            table: [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4")]
            for table in (
                "rollup_minute",
                "rollup_hour",
                "rollup_dim_minute",
                "rollup_dim_hour",
                "rollup_dim_day",
            )
        }


def test_rollups_and_stored_traces_by_arrays_sum_as_row_by_row(pg_store: SqlStore) -> None:
    """The rollups (and the traces already stored) are upserted from one array per column, histograms
    sliced out of one flat array each (a NULL one: no streamed call): a second batch that adds to every
    row stores what the row-by-row statements stored."""
    streamed = rec(
        tid(3),
        sid(1),
        kind=ObservationKind.GENERATION,
        model="gpt-4o-mini",
        usage=Usage(input=5, output=7),
        user_id="u2",
        tags=("a",),
    )
    streamed.observation.ttft_ns = 120_000_000
    first = [*_batch(), streamed]
    later = [
        rec(
            tid(n),
            sid(9),
            parent=sid(1),
            kind=ObservationKind.GENERATION,
            model="gpt-4o-mini" if n == 3 else "m-other",
            usage=Usage(input=1, output=1),
            start_s=0.5,
            user_id="u1",
        )
        for n in (1, 2, 3)
    ]
    later[2].observation.ttft_ns = 80_000_000
    stored = []
    for copy in (False, True):
        _clean(pg_store)
        pg_store.copy_spans = copy
        pg_store.write_spans(first)
        pg_store.write_spans(later)
        stored.append((_rollup_tables(pg_store), _stored(pg_store)))
    assert stored[0] == stored[1]
    rollups = stored[1][0]
    ttft = {row[2]: row[-1] for row in rollups["rollup_minute"]}
    assert ttft["m-other"] is None and ttft["gpt-4o-mini"] is not None
    assert len(rollups["rollup_dim_day"]) >= 4


def _sparse(rng: random.Random, size: int, non_zero: int) -> list[int]:
    """A batch's histogram of a few calls: ``non_zero`` buckets (some equal) among ``size``, trimmed."""
    counts = [0] * size
    for _ in range(non_zero):
        counts[rng.randrange(size)] += rng.choice((1, 1, 2, 7))
    while counts and not counts[-1]:
        counts.pop()
    return counts


def test_histograms_add_as_the_sql_function_of_0001_added_them(pg_store: SqlStore) -> None:
    """ph_hist_add (PL/pgSQL, migrations 0032 and 0033) sums what 0001's SQL function summed, element by
    element with the shorter array padded with zeros; two empty ones make an empty one (0001's: NULL).
    Short random arrays, and rollup-sized ones (~60 buckets) with few non-zero buckets (0033's path by
    ``array_positions``) or many (the loop), either one the longer."""
    rng = random.Random(5)
    pairs = [
        (
            [rng.choice((0, 0, 0, rng.randrange(1, 10**12))) for _ in range(rng.randrange(0, 12))],
            [rng.choice((0, 0, rng.randrange(1, 9))) for _ in range(rng.randrange(0, 12))],
        )
        for _ in range(200)
    ]
    for _ in range(100):
        stored = _sparse(rng, rng.randrange(1, 70), rng.randrange(0, 200))
        batch = _sparse(rng, rng.randrange(1, 70), rng.choice((1, 2, 3, 5, 15, 60)))
        pairs.append((stored, batch) if rng.random() < 0.7 else (batch, stored))
    with pg_store.engine.connect() as conn:
        for a, b in pairs:
            got = conn.exec_driver_sql("SELECT ph_hist_add(%s::bigint[], %s::bigint[])", (a, b)).scalar_one()
            reference = conn.exec_driver_sql(
                "SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i) "
                "FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS t(x, y, i)",
                (a, b),
            ).scalar_one()
            assert got == (reference if reference is not None else []), (a, b)


def test_rollup_tables_leave_room_for_hot_updates(pg_store: SqlStore) -> None:
    """The rollup tables are filled to 70% (migration 0033): a batch's updates of a row stay on its page."""
    with pg_store.engine.connect() as conn:
        options: dict[str, list[str]] = dict(
            conn.exec_driver_sql(
                "SELECT relname, reloptions FROM pg_class WHERE relname IN "
                "('rollup_minute', 'rollup_hour', 'rollup_dim_minute', 'rollup_dim_hour', 'rollup_dim_day')"
            ).all()
        )
    assert options == {name: ["fillfactor=70"] for name in options} and len(options) == 5
