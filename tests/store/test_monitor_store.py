"""The monitors' repository on SQLite and PostgreSQL: monitors and state, alerts and acknowledgement,
the lease that one process at a time holds, and the two series monitors read (filtered)."""

from __future__ import annotations

import uuid

from pilothouse.domain.monitors import (
    AlertStatus,
    Monitor,
    MonitorAlert,
    MonitorFilters,
    MonitorMetric,
    MonitorState,
)
from pilothouse.domain.scores import make_score
from pilothouse.domain.traces import Observation, ObservationKind, SpanRecord, Status, TraceAttributes, Usage
from pilothouse.store.monitors import MonitorStore
from pilothouse.store.sql import SqlStore

MINUTE_NS = 60 * 10**9
T0 = 1_800_000_000 * 10**9  # a whole minute


def _monitor(project: str, metric: MonitorMetric = MonitorMetric.SCORE_PASS_RATE, **filters: str) -> Monitor:
    return Monitor(
        id=uuid.uuid4().hex,
        project_id=project,
        name=f"watch {metric.value}",
        metric=metric,
        filters=MonitorFilters(**filters),
        score_name="correct" if metric.reads_scores else None,
        threshold=0.5 if metric is MonitorMetric.SCORE_PASS_RATE else None,
        shift=0.075,
        arl0=6000.0,
        baseline_s=7 * 86400,
        webhook_url=None,
        created_ns=T0,
    )


def _alert(monitor: Monitor, fired_ns: int, *, silenced: bool = False) -> MonitorAlert:
    return MonitorAlert(
        id=uuid.uuid4().hex,
        monitor_id=monitor.id,
        project_id=monitor.project_id,
        fired_ns=fired_ns,
        metric=monitor.metric,
        observed=0.7,
        baseline=0.9,
        samples=80,
        statistic=5.1,
        message="pass rate fell",
        silenced=silenced,
    )


def test_monitors_state_alerts_and_acknowledgement(store: SqlStore) -> None:
    repo = MonitorStore(store)
    mine, theirs = _monitor("p1", model="gpt-4o"), _monitor("p2")
    repo.create_monitor(mine)
    repo.create_monitor(theirs)
    assert [m.id for m in repo.list_monitors("p1")] == [mine.id]
    assert repo.get_monitor("p2", mine.id) is None  # another project's is not found
    assert repo.get_monitor("p1", mine.id) == mine

    state = MonitorState(baseline=0.9, baseline_n=400, h=534.0, scale=114.9, statistic=120.0, cursor_ns=T0)
    repo.save_state(mine.id, state)
    stored = repo.get_monitor("p1", mine.id)
    assert stored is not None and stored.state == state and stored.filters == MonitorFilters(model="gpt-4o")

    assert repo.silence("p1", mine.id, T0 + 3600 * 10**9)
    assert not repo.silence("p2", mine.id, None)
    silenced = repo.get_monitor("p1", mine.id)
    assert silenced is not None and silenced.silenced(T0) and not silenced.silenced(T0 + 7200 * 10**9)

    quiet, loud = _alert(mine, T0, silenced=True), _alert(mine, T0 + 1)
    repo.add_alert(quiet)
    assert not repo.has_open_alert(mine.id)  # a silenced alert does not hold the next one back
    repo.add_alert(loud)
    assert repo.has_open_alert(mine.id)
    assert [a.id for a in repo.list_alerts("p1")] == [loud.id, quiet.id]  # newest first
    assert repo.list_alerts("p2") == []
    assert repo.acknowledge("p2", loud.id, "intruder", T0) is None
    acked = repo.acknowledge("p1", loud.id, "key ops", T0 + 5)
    assert (
        acked is not None and acked.status is AlertStatus.ACKNOWLEDGED and acked.acknowledged_by == "key ops"
    )
    again = repo.acknowledge("p1", loud.id, "someone else", T0 + 9)
    assert again is not None and again.acknowledged_by == "key ops" and again.acknowledged_ns == T0 + 5
    assert not repo.has_open_alert(mine.id)
    assert [a.id for a in repo.list_alerts("p1", status=AlertStatus.OPEN)] == [quiet.id]
    repo.set_delivery(loud.id, "sent")
    assert repo.list_alerts("p1", status=AlertStatus.ACKNOWLEDGED)[0].delivery == "sent"

    assert not repo.delete_monitor("p2", mine.id)
    assert repo.delete_monitor("p1", mine.id)
    assert repo.list_alerts("p1") == [] and repo.list_monitors("p1") == []


def test_one_holder_of_the_lease_at_a_time(store: SqlStore) -> None:
    repo = MonitorStore(store)
    ttl = 60 * 10**9
    assert repo.take_lease("monitors", "a", T0, ttl)
    assert not repo.take_lease("monitors", "b", T0 + 1, ttl)  # a's runs until T0 + ttl
    assert repo.take_lease("monitors", "a", T0 + 30 * 10**9, ttl)  # a renews it
    assert not repo.take_lease("monitors", "b", T0 + ttl, ttl)
    assert repo.take_lease("monitors", "b", T0 + 30 * 10**9 + ttl, ttl)  # expired: b takes over
    assert not repo.take_lease("monitors", "a", T0 + 31 * 10**9 + ttl, ttl)
    assert repo.lease("monitors") == ("b", T0 + 30 * 10**9 + 2 * ttl)
    repo.release_lease("monitors", "b")
    assert repo.lease("monitors") is None
    assert repo.take_lease("monitors", "a", T0 + 32 * 10**9 + ttl, ttl)  # released: free at once


def _call(
    trace: str, start_ns: int, *, model: str, name: str, error: bool = False, prompt: str = "v1"
) -> SpanRecord:
    return SpanRecord(
        "p1",
        Observation(
            trace_id=trace,
            id=uuid.uuid4().hex[:16],
            name=name,
            start_ns=start_ns,
            end_ns=start_ns + 250 * 10**6,
            kind=ObservationKind.GENERATION,
            status=Status.ERROR if error else Status.OK,
            model=model,
            usage=Usage(input=100, output=20),
            prompt_name="answer",
            prompt_version=prompt,
        ),
        TraceAttributes(name=name),
    )


def test_series_read_with_filters_and_cursor(store: SqlStore) -> None:
    repo = MonitorStore(store)
    traces = {label: uuid.uuid4().hex for label in ("a", "b", "c")}
    store.write_spans(
        [
            _call(traces["a"], T0, model="gpt-4o", name="chat"),
            _call(traces["b"], T0 + 1, model="gpt-4o", name="chat", error=True, prompt="v2"),
            _call(traces["c"], T0 + MINUTE_NS, model="claude", name="search"),
        ]
    )
    scores = [
        make_score(trace_id=traces[label], name="correct", value=value, score_id=sid, created_ns=T0 + ns)
        for label, value, sid, ns in (("a", 1.0, "s1", 10), ("b", 0.0, "s2", 10), ("c", 1.0, "s3", 20))
    ]
    store.add_scores("p1", scores)
    everything = MonitorFilters()
    found = repo.scores_after("p1", "correct", everything, (0, ""), T0 + 100, 10)
    assert [(s.id, s.value) for s in found] == [("s1", 1.0), ("s2", 0.0), ("s3", 1.0)]
    # the cursor (time, id) resumes exactly after the last sample read, ties included
    assert [s.id for s in repo.scores_after("p1", "correct", everything, (T0 + 10, "s1"), T0 + 100, 10)] == [
        "s2",
        "s3",
    ]
    assert [s.id for s in repo.scores_after("p1", "correct", everything, (0, ""), T0 + 15, 10)] == [
        "s1",
        "s2",
    ]
    by_model = repo.scores_after("p1", "correct", MonitorFilters(model="gpt-4o"), (0, ""), T0 + 100, 10)
    assert [s.id for s in by_model] == ["s1", "s2"]
    by_route = repo.scores_after("p1", "correct", MonitorFilters(route="search"), (0, ""), T0 + 100, 10)
    assert [s.id for s in by_route] == ["s3"]
    by_prompt = repo.scores_after(
        "p1", "correct", MonitorFilters(prompt_name="answer", prompt_version="v2"), (0, ""), T0 + 100, 10
    )
    assert [s.id for s in by_prompt] == ["s2"]
    assert repo.scores_after("p2", "correct", everything, (0, ""), T0 + 100, 10) == []
    assert sorted(repo.score_values("p1", "correct", everything, T0, T0 + 15, 10)) == [0.0, 1.0]

    minutes = repo.minutes("p1", everything, T0 // 10**9, T0 // 10**9 + 120)
    assert [(m.bucket, m.count, m.errors, m.tokens) for m in minutes] == [
        (T0 // 10**9, 2, 1, 240),
        (T0 // 10**9 + 60, 1, 0, 120),
    ]
    assert sum(minutes[0].latency_counts) == 2
    chat = repo.minutes("p1", MonitorFilters(model="gpt-4o", route="chat"), T0 // 10**9, T0 // 10**9 + 120)
    assert [(m.count, m.errors) for m in chat] == [(2, 1)]
    assert repo.minutes("p1", everything, T0 // 10**9 + 60, T0 // 10**9 + 60) == []
