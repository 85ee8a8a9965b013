"""Exact breakdowns by end user, key, prompt version and tag from the dimension rollups, on SQLite and
on the real PostgreSQL: what they count equals what the stored calls add up to."""

from __future__ import annotations

import random
import time

import pytest

from pilothouse.domain.money import Money
from pilothouse.domain.queries import TraceQuery
from pilothouse.domain.traces import (
    REFUSED_PRICE_VERSION,
    Cost,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)
from pilothouse.store.breakdowns import dimension_breakdowns, dimension_groups
from pilothouse.store.sql import SqlStore

HOUR_S = 3600
# a whole hour six hours ago: minute rollups are kept for the last two days only
BASE_S = int(time.time()) // HOUR_S * HOUR_S - 6 * HOUR_S


def _call(i: int, start_s: int, trace_id: str, parent: str, *, key: str | None) -> SpanRecord:
    start = start_s * 10**9 + i
    call = Observation(
        trace_id,
        f"{i + 10_000:016x}",
        "chat",
        start,
        start + (i % 7 + 1) * 10**7,
        kind=ObservationKind.GENERATION,
        parent_id=parent,
        status=Status.ERROR if i % 5 == 0 else Status.OK,
        model="m",
        usage=Usage(input=i, output=1),
        cost=Cost({"input": Money.from_usd("0.000001") * (i + 1)}, "v1"),
        prompt_name="greet" if i % 2 else None,
        prompt_version="3" if i % 4 == 1 else None,
        attributes={"gateway.key_id": key} if key else {},
    )
    # the call carries no user or tags: they are on the root span (this batch or an earlier one)
    return SpanRecord("p", call, TraceAttributes(), metered=key is not None)


def _seed(store: SqlStore, spread_s: int = 3 * HOUR_S) -> list[dict[str, object]]:
    """Traces spread over three hours, each a root (with user and tags) and a model call; half the
    calls come in a later batch than their root. Returns what each call should count under."""
    rng = random.Random(7)
    expected = []
    later = []
    for i in range(120):
        start_s = BASE_S + rng.randrange(spread_s)
        trace_id = f"{i:032x}"
        user = f"u{i % 4}" if i % 9 else None
        tags = tuple(f"t{j}" for j in range(i % 3))
        root = Observation(trace_id, f"{i:016x}", "agent", start_s * 10**9, start_s * 10**9 + 10**9)
        key = "k1" if i % 3 == 0 else ("" if i % 3 == 1 else None)
        call = _call(i, start_s, trace_id, root.id, key=key)
        root_record = SpanRecord("p", root, TraceAttributes(user_id=user, tags=tags))
        if i % 2:
            store.write_spans([root_record, call])
        else:
            store.write_spans([root_record])
            later.append(call)
        o = call.observation
        prompt = f"{o.prompt_name}@{o.prompt_version}" if o.prompt_version else (o.prompt_name or "")
        expected.append(
            {
                "start_s": start_s,
                "user": user or "",
                "key": key or "",
                "prompt": prompt,
                "tag": list(tags) or [""],
                "errors": int(o.status is Status.ERROR),
                "cost": o.cost.total if o.cost else Money.ZERO,
                "input": o.usage.input,
            }
        )
    store.write_spans(later)
    return expected


@pytest.mark.slow  # 120 traces written in 180 batches, twice per database
@pytest.mark.parametrize(("offset_min", "hours"), [(0, 3), (15, 3), (50, 3), (0, 72)])
def test_breakdowns_equal_the_stored_calls(store: SqlStore, offset_min: int, hours: int) -> None:
    """Over hours (minute and hour rollups) and over days (day rollups in the middle; minute rows
    older than two days are pruned, so that range is whole hours)."""
    expected = _seed(store, hours * HOUR_S)
    start_s = BASE_S + offset_min * 60  # not a whole hour: the edges come from the minute rollups
    end_s = BASE_S + hours * HOUR_S - offset_min * 60
    in_range = [e for e in expected if start_s <= int(e["start_s"]) < end_s]  # type: ignore[call-overload]
    assert in_range
    for dimension in ("user", "key", "prompt", "tag"):
        want: dict[str, tuple[int, int, Money, int]] = {}
        for e in in_range:
            values = e[dimension] if dimension == "tag" else [e[dimension]]
            for value in values:  # type: ignore[attr-defined]
                n, err, cost, tokens = want.get(value, (0, 0, Money.ZERO, 0))
                want[value] = (n + 1, err + int(e["errors"]), cost + e["cost"], tokens + int(e["input"]))  # type: ignore[operator, call-overload]
        groups, count = dimension_groups(store, "p", dimension, start_s, end_s, limit=100)
        got = {g.value: (g.sums.count, g.sums.errors, g.sums.cost_usd, g.sums.input_tokens) for g in groups}
        assert got == want, dimension
        assert count == len(want)
        for g in groups:  # each group's latency histogram holds each of its calls once
            assert g.latency_hist is not None and int(g.latency_hist.sum()) == g.sums.count
            # plain numbers on both databases (PostgreSQL's sums of bigints are Decimals: a 500 on
            # the Overview and Costs pages, which format them)
            assert type(g.sums.input_tokens) is int and type(g.sums.latency_ms_sum) is float


@pytest.mark.slow
def test_breakdown_order_limit_and_bad_arguments(store: SqlStore) -> None:
    _seed(store)
    end_s = BASE_S + 3 * HOUR_S
    by_requests, count = dimension_groups(store, "p", "user", BASE_S, end_s, limit=2)
    everything, _ = dimension_groups(store, "p", "user", BASE_S, end_s, limit=100)
    assert len(by_requests) == 2 and count == len(everything) > 2
    assert [g.value for g in by_requests] == [g.value for g in everything[:2]]
    assert by_requests[0].sums.count >= by_requests[1].sums.count
    by_cost, _ = dimension_groups(store, "p", "user", BASE_S, end_s, order="cost", limit=100)
    assert [g.sums.cost_usd for g in by_cost] == sorted((g.sums.cost_usd for g in by_cost), reverse=True)
    assert dimension_groups(store, "other", "user", BASE_S, end_s) == ([], 0)  # tenants stay apart
    # several dimensions read at once (as the pages read them): each as it is alone
    together = dimension_breakdowns(store, "p", ("key", "user", "tag"), BASE_S, end_s, order="cost", limit=3)
    for dimension in ("key", "user", "tag"):
        alone = dimension_groups(store, "p", dimension, BASE_S, end_s, order="cost", limit=3)
        assert together[dimension][1] == alone[1]
        assert [(g.value, g.sums, g.latency_hist.tolist()) for g in together[dimension][0]] == [
            (g.value, g.sums, g.latency_hist.tolist()) for g in alone[0]
        ]
    for bad in ({"dimension": "model"}, {"order": "name"}, {"start_s": BASE_S + 1}):
        args = {"dimension": "user", "start_s": BASE_S, "order": "requests", **bad}
        with pytest.raises(ValueError):
            dimension_groups(
                store, "p", str(args["dimension"]), int(args["start_s"]), end_s, order=str(args["order"])
            )


def test_refusals_are_counted_apart_from_errors(store: SqlStore) -> None:
    """A call the gateway turned away (its cost priced "refused") counts as refused, not as an error,
    in the model rollups and the dimension rollups; a failed upstream call stays an error."""
    start_s = BASE_S + 120
    records = []
    for i, (model, refused) in enumerate([("asked", True), ("m", False), ("m", False)]):
        o = Observation(
            f"{i + 500:032x}",
            f"{i + 500:016x}",
            f"chat {model}",
            start_s * 10**9,
            start_s * 10**9 + 10**6,
            kind=ObservationKind.GENERATION,
            status=Status.ERROR if refused or i == 1 else Status.OK,
            request_model=model,
            model=None if refused else "m-1",
            cost=Cost({"input": Money.ZERO}, REFUSED_PRICE_VERSION if refused else "v1"),
        )
        records.append(SpanRecord("p", o, TraceAttributes(user_id="u")))
    store.write_spans(records)
    rows = store.model_metrics("p", start_s - 120, start_s + 60, 60)
    by_model = {m.model: m.sums for m in rows}
    assert (by_model["asked"].count, by_model["asked"].errors, by_model["asked"].refused) == (1, 0, 1)
    assert (by_model["m-1"].count, by_model["m-1"].errors, by_model["m-1"].refused) == (2, 1, 0)
    (user,), _ = dimension_groups(store, "p", "user", BASE_S, BASE_S + HOUR_S)
    assert (user.value, user.sums.count, user.sums.errors, user.sums.refused) == ("u", 3, 1, 1)


def test_the_model_filter_matches_the_requested_and_the_served_name(store: SqlStore) -> None:
    """A trace matches a model filter on the name its calls asked for, on the name that served them,
    and on any of its models."""
    start = BASE_S * 10**9
    root = Observation("a" * 32, "a" * 16, "agent", start, start + 10**9)
    calls = [
        Observation(
            "a" * 32,
            f"{i:016x}",
            "chat",
            start + i,
            start + 10**6,
            kind=ObservationKind.GENERATION,
            parent_id=root.id,
            request_model=asked,
            model=served,
        )
        for i, (asked, served) in enumerate([("sim", "sim-1"), ("judge", "judge-2")], start=1)
    ]
    store.write_spans([SpanRecord("p", o, TraceAttributes()) for o in (root, *calls)])
    for name in ("sim", "sim-1", "judge", "judge-2"):
        found = store.list_traces("p", TraceQuery(model=name)).data
        assert [s.trace.id for s in found] == ["a" * 32], name
    assert store.list_traces("p", TraceQuery(model="other")).data == []


def test_old_minute_rows_are_pruned_and_hours_stay(store: SqlStore) -> None:
    """The minute rows of the dimension rollups are kept two days back from the newest minute written;
    the hour and day rows stay, so that whole hours of any age are still exact."""
    from sqlalchemy import func, select

    from pilothouse.store import tables as t

    now_hour = int(time.time()) // 3600 * 3600
    old_s, new_s = now_hour - 3 * 86400 + 60, now_hour - 3540  # three days ago; within the hour
    for i, start_s in enumerate((old_s, new_s)):
        store.write_spans([_call(i, start_s, f"{i + 900:032x}", "1" * 16, key=None)])
    with store.engine.connect() as conn:
        minutes = conn.execute(select(t.rollup_dim_minute.c.bucket).distinct()).scalars().all()
        hours = conn.execute(select(func.count()).select_from(t.rollup_dim_hour)).scalar_one()
    assert minutes == [new_s]  # the old call's minute rows are gone
    assert hours == 2 * 4  # user, key, prompt and tag for each call
    old_hour = old_s // 3600 * 3600
    (old,), _ = dimension_groups(store, "p", "user", old_hour, old_hour + 3600)
    assert old.sums.count == 1


def test_histograms_kept_between_reads_are_read_again_after_a_late_call(store: SqlStore) -> None:
    """The top values' histograms are kept in process per part of the range with the sums they were
    read with (pilothouse.store.rollup_cache); a late call written by another process changes its
    part's sums, and that part is read again: the figures equal those of a read without the cache."""
    for i in range(30):
        trace_id = f"{i:032x}"
        root = Observation(
            trace_id, f"{i:016x}", "agent", (BASE_S + 60 * i) * 10**9, (BASE_S + 60 * i + 1) * 10**9
        )
        store.write_spans(
            [
                SpanRecord("p", root, TraceAttributes(user_id=f"u{i % 3}")),
                _call(i, BASE_S + 60 * i, trace_id, root.id, key="k1"),
            ]
        )
    start_s, end_s = BASE_S - 30 * 60, BASE_S + 2 * HOUR_S  # minute and hour parts

    def read() -> dict[str, list[tuple[str, int, list[int]]]]:
        found = dimension_breakdowns(store, "p", ("user", "key"), start_s, end_s)
        return {
            d: [(g.value, g.sums.count, g.latency_hist.tolist()) for g in groups]  # type: ignore[union-attr]
            for d, (groups, _) in found.items()
        }

    first = read()
    assert len(store.histogram_cache) > 0
    assert read() == first
    other = SqlStore.from_url(store.engine.url.render_as_string(hide_password=False))
    try:
        trace_id = f"{99:032x}"
        root = Observation(trace_id, f"{99:016x}", "agent", (BASE_S + 5) * 10**9, (BASE_S + 6) * 10**9)
        other.write_spans(
            [
                SpanRecord("p", root, TraceAttributes(user_id="u0")),
                _call(99, BASE_S + 5, trace_id, root.id, key="k1"),
            ]
        )
    finally:
        other.close()
    after = read()
    store.histogram_cache.clear()
    assert after == read()
    assert (
        dict((v, n) for v, n, _ in after["user"])["u0"] == 1 + dict((v, n) for v, n, _ in first["user"])["u0"]
    )
    assert sum(after["key"][0][2]) == 31
