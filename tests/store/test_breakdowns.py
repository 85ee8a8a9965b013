"""Exact breakdowns by end user, key, prompt version and tag from the dimension rollups, on SQLite and
on the real PostgreSQL: what they count equals what the stored calls add up to."""

from __future__ import annotations

import random

import pytest

from pilothouse.domain.money import Money
from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)
from pilothouse.store.breakdowns import dimension_groups
from pilothouse.store.sql import SqlStore

HOUR_S = 3600
BASE_S = 1_700_000_000 // HOUR_S * HOUR_S  # a whole hour


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


def _seed(store: SqlStore) -> list[dict[str, object]]:
    """Traces spread over three hours, each a root (with user and tags) and a model call; half the
    calls come in a later batch than their root. Returns what each call should count under."""
    rng = random.Random(7)
    expected = []
    later = []
    for i in range(120):
        start_s = BASE_S + rng.randrange(3 * HOUR_S)
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


@pytest.mark.parametrize("offset_min", [0, 15, 50])
def test_breakdowns_equal_the_stored_calls(store: SqlStore, offset_min: int) -> None:
    expected = _seed(store)
    start_s = BASE_S + offset_min * 60  # not a whole hour: the edges come from the minute rollups
    end_s = BASE_S + 3 * HOUR_S - offset_min * 60
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
    for bad in ({"dimension": "model"}, {"order": "name"}, {"start_s": BASE_S + 1}):
        args = {"dimension": "user", "start_s": BASE_S, "order": "requests", **bad}
        with pytest.raises(ValueError):
            dimension_groups(
                store, "p", str(args["dimension"]), int(args["start_s"]), end_s, order=str(args["order"])
            )
