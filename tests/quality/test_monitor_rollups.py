"""Monitors over the rollups of model calls, through the worker and the real store (SQLite and
PostgreSQL): the error rate and
latency p95 take their baseline from the trailing minutes, then a spike of errors (or of latency)
alerts, and a steady series does not."""

from __future__ import annotations

import uuid

import pytest

from pilothouse.domain.traces import Observation, ObservationKind, SpanRecord, Status, TraceAttributes
from pilothouse.quality.monitors import Monitors, MonitorWorker
from pilothouse.store.sql import SqlStore

pytestmark = pytest.mark.slow  # an hour of calls written and read back: a second or two

MINUTE_NS = 60 * 10**9
START_NS = 1_900_000_000 * 10**9 // MINUTE_NS * MINUTE_NS


def _calls(
    minute: int, count: int, *, errors: int = 0, latency_ms: int = 200, model: str = "gpt-4o"
) -> list[SpanRecord]:
    start = START_NS + minute * MINUTE_NS
    return [
        SpanRecord(
            "p1",
            Observation(
                trace_id=uuid.uuid4().hex,
                id=uuid.uuid4().hex[:16],
                name="chat",
                start_ns=start + i * 10**9,
                end_ns=start + i * 10**9 + (latency_ms + 7 * (i % 5)) * 10**6,
                kind=ObservationKind.GENERATION,
                status=Status.ERROR if i < errors else Status.OK,
                model=model,
            ),
            TraceAttributes(),
        )
        for i in range(count)
    ]


def test_error_rate_and_latency_monitors_over_rollups(store: SqlStore) -> None:
    service = Monitors(store)
    errors = service.create("p1", {"name": "errors", "metric": "error_rate", "model": "gpt-4o", "shift": 0.1})
    latency = service.create("p1", {"name": "slow", "metric": "latency_p95", "route": "chat"})
    steady = service.create("p1", {"name": "other model", "metric": "error_rate", "model": "claude"})
    for minute in range(60):  # an hour: 2% errors, ~230 ms
        store.write_spans(_calls(minute, 10, errors=1 if minute % 5 == 0 else 0))
        store.write_spans(_calls(minute, 10, model="claude"))
    now = [START_NS + 63 * MINUTE_NS]  # minutes up to 60 are complete and past the lag
    worker = MonitorWorker(store, clock=lambda: now[0])
    assert worker.evaluate(now[0]) == []  # baselines taken
    states = {m.name: m.state for m in service.all("p1")}
    assert states["errors"].baseline == pytest.approx(12 / 600)
    assert states["slow"].baseline is not None and states["slow"].baseline_n == 60
    for minute in range(61, 71):  # ten minutes: 40% errors, five times slower
        store.write_spans(_calls(minute, 10, errors=4, latency_ms=1000))
        store.write_spans(_calls(minute, 10, model="claude"))
    now[0] = START_NS + 74 * MINUTE_NS
    fired = worker.evaluate(now[0])
    assert fired is not None
    by_monitor = {f.monitor.id: f.alert for f in fired}
    assert set(by_monitor) == {errors.id, latency.id}  # the claude calls stayed as they were
    assert by_monitor[errors.id].observed > 0.2 and "error rate rose" in by_monitor[errors.id].message
    assert by_monitor[latency.id].observed > 500 and "model" not in by_monitor[latency.id].message
    assert steady.id not in by_monitor
    assert worker.evaluate(now[0]) == []  # the minutes read are not read again
