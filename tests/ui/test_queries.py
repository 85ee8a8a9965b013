"""The UI's bounded store reads, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

from pilothouse.domain.money import Money
from pilothouse.domain.sketch import BUCKETS, latency_bucket, quantile
from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    Score,
    ScoreDataType,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)
from pilothouse.store.analytics import AnalyticsQueries
from pilothouse.store.sql import SqlStore
from pilothouse.ui import analytics as an

NOW = time.time_ns()
MINUTE = 60 * 10**9


def _trace(i: int, project: str = "p", minutes_ago: int = 0) -> list[SpanRecord]:
    start = NOW - minutes_ago * MINUTE - i * 10**6
    trace_id = f"{i:032x}"
    attrs = TraceAttributes(user_id=f"u{i % 3}", session_id=f"s{i % 2}", tags=("t",))
    root = Observation(trace_id, f"{i:016x}", "agent", start, start + (i + 1) * 10**7, input=f"question {i}")
    call = Observation(
        trace_id,
        f"{i + 1000:016x}",
        "chat",
        start + 1000,
        start + (i + 1) * 10**7,
        kind=ObservationKind.GENERATION,
        parent_id=root.id,
        status=Status.ERROR if i == 4 else Status.OK,
        model="m1" if i % 2 else "m2",
        usage=Usage(input=10 * i, output=i),
        cost=Cost({"input": Money.from_usd("0.001") * i}, "v1", saved=Money.from_usd("0.0003") * i),
        ttft_ns=(5 + i) * 10**6 if i % 3 else None,  # a third of the calls not streamed
        prompt_name="greet",
        prompt_version="2",
        attributes={"gateway.key_id": "k1"},
        output="the answer is umbrella" if i == 7 else "ok",
    )
    # the call as the gateway records it: metered, so its key is stored
    return [SpanRecord(project, root, attrs), SpanRecord(project, call, attrs, metered=True)]


def test_ui_queries(store: SqlStore) -> None:
    for i in range(10):
        store.write_spans(_trace(i, minutes_ago=i * 3))
    store.write_spans(_trace(99, project="other"))
    store.add_scores("p", [Score("sc1", f"{7:032x}", "helpful", ScoreDataType.NUMERIC, 1.0, created_ns=NOW)])
    q = AnalyticsQueries(store)
    win = an.window("1h", now_s=NOW / 1e9)  # the data's clock: a slow suite runs this long after import
    rows = q.rollup_rows("p", win.start_s, win.end_s, win.bucket_s)
    totals = an.rollup_totals(rows)
    assert totals.requests == 10 and totals.errors == 1
    assert totals.cost_usd == Money.from_usd("0.045")  # 0.001 x (0 + 1 + ... + 9), exactly
    assert {name for name, _ in an.rollup_groups(rows, lambda r: r.model)} == {"m1", "m2"}

    # TTFT and cache savings from the rollups too: 6 streamed calls (5 + i ms for i not a multiple of 3)
    assert totals.saved_usd == Money.from_usd("0.0135")  # 0.0003 x 45, exactly
    assert totals.streamed == 6
    counts = [0] * BUCKETS
    for ms in (5 + i for i in range(10) if i % 3):
        counts[latency_bucket(float(ms))] += 1
    assert totals.ttft_p50 == quantile(counts, 0.5)
    assert abs(totals.ttft_p50 - 9.5) / 9.5 < 0.08  # the true median, within the sketch's bucket width

    costly, slowest = q.top_traces("p", win.start_ns, win.end_ns, limit=3)
    assert [t.id for t in costly] == [f"{i:032x}" for i in (9, 8, 7)]
    assert [t.id for t in slowest] == [f"{i:032x}" for i in (9, 8, 7)]  # latency grows with i
    # a range of more traces than are sorted walks the cost and latency indexes: the same answer
    walked = q.top_traces("p", win.start_ns, win.end_ns, limit=3, sort_up_to=2)
    assert ([t.id for t in walked[0]], [t.id for t in walked[1]]) == (
        [t.id for t in costly],
        [t.id for t in slowest],
    )
    # and only the range's traces: trace 9 started 27 minutes ago, 8 at 24, 7 at 21 ...
    cut = NOW - 25 * MINUTE
    recent = q.top_traces("p", cut, win.end_ns, limit=3, sort_up_to=2)
    assert [t.id for t in recent[0]] == [f"{i:032x}" for i in (8, 7, 6)]
    assert [t.id for t in recent[1]] == [f"{i:032x}" for i in (8, 7, 6)]

    sessions = q.active_sessions("p", win.start_ns, win.end_ns, limit=1)
    assert len(sessions.data) == 1 and sessions.next_cursor is not None
    from pilothouse.domain.queries import decode_cursor

    rest = q.active_sessions(
        "p", win.start_ns, win.end_ns, limit=5, cursor=decode_cursor(sessions.next_cursor)
    )
    assert {s.id for s in sessions.data + rest.data} == {"s0", "s1"}
    assert sum(s.traces for s in sessions.data + rest.data) == 10
    users = q.active_users("p", win.start_ns, win.end_ns)
    assert {u.id: u.traces for u in users.data} == {"u0": 4, "u1": 3, "u2": 3}

    turns, more = q.session_traces("p", "s1", limit=3)
    assert more and len(turns) == 3 and turns[0].start_ns < turns[-1].start_ns
    assert turns[-1].input == "question 1"  # the root span's input when the trace has none
    assert [t.id for t in q.session_traces("other", "s1")[0]] == [f"{99:032x}"]  # its own project only

    ids = [f"{i:032x}" for i in range(10)]
    assert [s.name for s in q.scores_for_traces("p", ids)[f"{7:032x}"]] == ["helpful"]
    assert q.scores_for_traces("other", ids) == {}
    assert q.traces_containing("p", ids, "UMBRELLA") == {f"{7:032x}"}
    assert q.traces_containing("other", ids, "umbrella") == set()
    assert q.api_key("nope") is None


def test_rollup_rows_merge_minutes_into_buckets_exactly(store: SqlStore) -> None:
    # calls spread over 40 minutes, read per minute and per 15 minutes: the same sums and histograms
    for i in range(20):
        store.write_spans(_trace(i, minutes_ago=2 * i))
    q = AnalyticsQueries(store)
    win = an.window("1h", now_s=NOW / 1e9)  # the data's clock: a slow suite runs this long after import
    minutes = q.rollup_rows("p", win.start_s, win.end_s, 60)
    quarters = q.rollup_rows("p", win.start_s, win.end_s, 900)
    assert len(quarters) < len(minutes)
    expected: dict[tuple[int, str, str], list[Any]] = {}
    for r in minutes:
        key = (r.bucket_s - (r.bucket_s - win.start_s) % 900, r.model, r.name)
        seen = expected.setdefault(key, [0, Money.ZERO, 0, r.latency_hist * 0])
        seen[0] += r.sums.count
        seen[1] += r.sums.cost_usd
        seen[2] += r.sums.input_tokens
        seen[3] = seen[3] + r.latency_hist
    assert {(r.bucket_s, r.model, r.name) for r in quarters} == set(expected)
    for r in quarters:
        count, cost, tokens, hist = expected[(r.bucket_s, r.model, r.name)]
        assert (r.sums.count, r.sums.cost_usd, r.sums.input_tokens) == (count, cost, tokens)
        assert (r.latency_hist == hist).all() and int(r.latency_hist.sum()) == r.sums.count
    assert sum(r.sums.count for r in quarters) == 20
    assert sum((r.sums.cost_usd for r in quarters), Money.ZERO) == Money.from_usd("0.19")  # 0.001 x 190
    # a range before the first call: no rows
    assert q.rollup_rows("p", win.start_s - 3600, win.start_s, 900) == []


def _same_rows(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        (x.bucket_s, x.model, x.name, x.sums) == (y.bucket_s, y.model, y.name, y.sums)
        and (x.latency_hist == y.latency_hist).all()
        and (x.ttft_hist == y.ttft_hist).all()
        for x, y in zip(a, b, strict=True)
    )


def test_rollup_histograms_kept_between_reads_and_read_again_when_late_spans_change_a_bucket(
    store: SqlStore,
) -> None:
    for i in range(12):
        store.write_spans(_trace(i, minutes_ago=3 * i))
    q = AnalyticsQueries(store)
    win = an.window("1h", now_s=NOW / 1e9)  # the data's clock: a slow suite runs this long after import
    args = ("p", win.start_s, win.end_s, 900)
    first = q.rollup_rows(*args)
    assert len(store.histogram_cache) == len(first) > 0
    assert _same_rows(q.rollup_rows(*args), first)
    # a late call into a past bucket, written by another process (its own store): that bucket's sums
    # change, so its histograms are read again; the figures are those of a store without a cache
    other = SqlStore.from_url(str(store.engine.url.render_as_string(hide_password=False)))
    try:
        other.write_spans(_trace(40, minutes_ago=31))
    finally:
        other.close()
    after = q.rollup_rows(*args)
    store.histogram_cache.clear()
    fresh = q.rollup_rows(*args)
    assert _same_rows(after, fresh)
    assert sum(r.sums.count for r in after) == 13
    assert sum(int(r.latency_hist.sum()) for r in after) == 13
    late = latency_bucket((41 * 10**7 - 1000) / 1e6)  # the late call's latency
    assert sum(int(r.latency_hist[late]) for r in after) == 1 + sum(int(r.latency_hist[late]) for r in first)
    # the cached arrays cannot be changed in place by a reader
    assert not after[0].latency_hist.flags.writeable


def test_rollup_histogram_cache_stores_only_histograms_that_match_their_sums() -> None:
    import numpy as np

    from pilothouse.store.rollup_cache import RollupHistogramCache

    cache = RollupHistogramCache(max_entries=2)
    hist = np.zeros(BUCKETS, np.int64)
    hist[3] = 2
    key = ("p", "rollup_minute", 0, 60, "m", "chat")
    # a call written between the sums and the histogram read: 3 calls in the histogram, 2 in the sums
    assert not cache.put(key, (2,), 3, hist, hist)
    assert cache.get(key, (2,)) is None
    assert cache.put(key, (2,), 2, hist, hist)
    assert cache.get(key, (2,)) is not None and cache.get(key, (3,)) is None
    for n in range(2):
        cache.put(("p", "rollup_minute", 60 * (n + 1), 60 * (n + 2), "m", "chat"), (2,), 2, hist, hist)
    assert len(cache) == 2 and cache.get(key, (2,)) is None  # the oldest went first
