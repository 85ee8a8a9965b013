"""Retention per project on SQLite and PostgreSQL: old traces go in batches with their spans and scores;
other projects, newer traces and the rollups stay."""

from __future__ import annotations

import pytest

from pilothouse.domain.scores import make_score
from pilothouse.domain.traces import ObservationKind, Usage
from pilothouse.server.retention import RetentionWorker
from pilothouse.store.leased_jobs import Leases
from pilothouse.store.retention import DAY_NS, RetentionStore
from pilothouse.store.sql import SqlStore
from tests.store.test_store import T0, rec, sid, tid

NOW = T0 + 40 * DAY_NS


def _day(days_ago: float) -> float:
    return (NOW - T0) / 1e9 - days_ago * 86_400  # a rec() start_s that many days before NOW


def test_retention_deletes_old_traces_of_that_project_only(store: SqlStore) -> None:
    spans = [
        rec(
            tid(n), sid(1), start_s=_day(35), kind=ObservationKind.GENERATION, model="m", usage=Usage(input=1)
        )
        for n in range(1, 4)
    ]
    spans += [rec(tid(n), sid(2), parent=sid(1), start_s=_day(35)) for n in range(1, 4)]
    spans.append(rec(tid(9), sid(1), start_s=_day(5)))  # recent
    spans.append(rec(tid(1), sid(1), start_s=_day(35), project="p2"))  # another project, same trace id
    store.write_spans(spans)
    store.add_scores("p1", [make_score(trace_id=tid(1), name="ok", value=True)])
    store.add_scores("p1", [make_score(trace_id=tid(9), name="ok", value=True)])
    kept = RetentionStore(store)
    kept.set_retention_days("p1", 30)
    assert kept.retention() == {"p1": 30}

    assert kept.expire(NOW, batch_traces=2) == {"p1": 3}  # two batches
    assert store.count_spans("p1") == 1 and store.count_spans("p2") == 1
    assert store.get_trace("p1", tid(1)) is None and store.get_trace("p2", tid(1)) is not None
    recent = store.get_trace("p1", tid(9))
    assert recent is not None and [s.name for s in recent.scores] == ["ok"]
    # the dashboards' rollups keep what was deleted
    (metrics,) = store.model_metrics("p1", T0 // 10**9 - 60, NOW // 10**9, 86_400 * 60)
    assert metrics.sums.count == 3
    assert kept.expire(NOW) == {}  # nothing left to delete
    assert kept.disk_bytes() > 0


def test_retention_bounds(store: SqlStore) -> None:
    kept = RetentionStore(store)
    for days in (0, -1, 36_501):
        with pytest.raises(ValueError, match="retention must be 1 to 36,500 days"):
            kept.set_retention_days("p1", days)
    kept.set_retention_days("p1", 7)
    kept.set_retention_days("p1", None)
    assert kept.retention() == {}


def test_a_retention_pass_that_outlives_its_lease_stops(store: SqlStore) -> None:
    """The retention job renews its lease before each batch of deletes: when a long pass's lease ran out
    and another process took the job, this pass stops instead of deleting beside it (the job runs once
    across processes, whatever a pass's length)."""
    store.write_spans([rec(tid(n), sid(1), start_s=_day(35)) for n in range(1, 6)])
    RetentionStore(store).set_retention_days("p1", 30)
    leases = Leases(store)
    calls = 0

    def clock() -> int:  # A's clock: before its second batch, its lease has run out and B has the job
        nonlocal calls
        calls += 1
        if calls == 3:  # 1: the pass's start, 2: before the first batch, 3: before the second
            assert leases.take_lease("retention", "process-b", NOW + 3600 * 10**9, 600 * 10**9)
        return NOW

    first = RetentionWorker(store, interval_s=60, clock=clock, batch_traces=2)
    assert first.run_once() is None  # it stopped: not a pass of this process
    assert first.passes == 0 and first.deleted == 0
    assert store.count_spans("p1") == 3  # one batch of two went before B took the job over
    lease = leases.lease("retention")
    assert lease is not None and lease[0] == "process-b"
    # B's own pass (holding the lease) deletes the rest
    second = RetentionWorker(store, interval_s=60, clock=lambda: NOW + 3601 * 10**9, batch_traces=2)
    second.holder = "process-b"
    assert second.run_once() == {"p1": 3}
    assert store.count_spans("p1") == 0


def test_a_retention_written_out_of_range_by_hand_is_skipped(store: SqlStore) -> None:
    """``projects.retention_days`` set in the database past the CLI's checks: 0 or less would delete the
    project's new traces, 2,000,000,000 days made every pass fail (bigint out of range) and so stopped
    every project's retention. Such a project keeps its traces; the others' retention runs."""
    from sqlalchemy import update

    from pilothouse.store import tables as t

    store.write_spans([rec(tid(n), sid(1), start_s=_day(35), project=f"p{n}") for n in range(1, 5)])
    store.write_spans([rec(tid(9), sid(1), start_s=_day(0), project="p2")])  # new: a 0 deleted it
    kept = RetentionStore(store)
    kept.set_retention_days("p1", 30)
    for project, days in (("p2", 0), ("p3", -5), ("p4", 2_000_000_000)):
        store.ensure_project(project)
        with store.engine.begin() as conn:
            conn.execute(update(t.projects).where(t.projects.c.id == project).values(retention_days=days))
    assert kept.retention() == {"p1": 30}
    assert kept.expire(NOW) == {"p1": 1}
    assert [store.count_spans(p) for p in ("p1", "p2", "p3", "p4")] == [0, 2, 1, 1]
