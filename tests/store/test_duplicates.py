"""A call traced by both the client's instrumentation and the gateway (the gateway's span a child of the
client's, through ``traceparent``) counts its tokens and cost once, in whichever order the two spans
arrive, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import pytest

from pilothouse.domain.money import Money
from pilothouse.domain.traces import Cost, Observation, ObservationKind, SpanRecord, TraceAttributes, Usage
from pilothouse.store.breakdowns import dimension_groups
from pilothouse.store.sql import SqlStore

BASE_S = 1_700_000_000 // 3600 * 3600
TRACE = "d" * 32


def _spans() -> tuple[SpanRecord, SpanRecord, SpanRecord]:
    """The app's root span, the client's model-call span, and the gateway's span of the same call."""
    start = (BASE_S + 60) * 10**9
    root = Observation(TRACE, "1" * 16, "agent", start, start + 10**9)
    usage = Usage(input=100, output=20)
    client = Observation(
        TRACE,
        "2" * 16,
        "chat gpt-4o-mini",
        start + 1,
        start + 5 * 10**8,
        kind=ObservationKind.GENERATION,
        parent_id=root.id,
        request_model="gpt-4o-mini",
        usage=usage,
        cost=Cost({"input": Money.from_usd("0.001")}, "v1"),
    )
    gateway = Observation(
        TRACE,
        "3" * 16,
        "chat gpt-4o-mini",
        start + 2,
        start + 4 * 10**8,
        kind=ObservationKind.GENERATION,
        parent_id=client.id,
        request_model="gpt-4o-mini",
        model="gpt-4o-mini-2024-07-18",
        usage=Usage(input=100, output=20),
        cost=Cost({"input": Money.from_usd("0.001")}, "v1"),
        attributes={"gateway.key_id": "k1"},
    )
    attrs = TraceAttributes(user_id="u")
    return (
        SpanRecord("p", root, attrs),
        SpanRecord("p", client, attrs),
        SpanRecord("p", gateway, attrs, metered=True),
    )


@pytest.mark.parametrize("order", ["one batch", "gateway first", "client first"])
def test_a_call_traced_twice_counts_once(store: SqlStore, order: str) -> None:
    root, client, gateway = _spans()
    batches = {
        "one batch": [[root, client, gateway]],
        "gateway first": [[gateway], [root, client]],
        "client first": [[root, client], [gateway]],
    }[order]
    for batch in batches:
        store.write_spans(batch)
    detail = store.get_trace("p", TRACE)
    assert detail is not None
    assert len(detail.observations) == 3  # both spans are kept: the trace view shows them
    assert detail.trace.usage.total == 120
    assert detail.trace.cost_usd == Money.from_usd("0.001")
    (rollup,) = [m for m in store.model_metrics("p", BASE_S, BASE_S + 3600, 3600)]
    assert rollup.sums.count == 1 and rollup.sums.input_tokens == 100
    (user,), _ = dimension_groups(store, "p", "user", BASE_S, BASE_S + 3600)
    assert user.sums.count == 1 and user.sums.cost_usd == Money.from_usd("0.001")


def test_unrelated_calls_of_a_trace_all_count(store: SqlStore) -> None:
    """Two client calls (no gateway span under either) and a gateway call with no client span above it
    are three calls."""
    root, client, gateway = _spans()
    other = Observation(
        TRACE,
        "4" * 16,
        "chat",
        client.observation.start_ns,
        client.observation.end_ns,
        kind=ObservationKind.GENERATION,
        parent_id=root.observation.id,
        usage=Usage(input=1, output=1),
    )
    gateway.observation.parent_id = root.observation.id  # called straight from the app's span
    store.write_spans([root, client])
    store.write_spans([SpanRecord("p", other, TraceAttributes()), gateway])
    detail = store.get_trace("p", TRACE)
    assert detail is not None and detail.trace.usage.total == 120 + 2 + 120


@pytest.mark.parametrize("order", ["one export", "outer first", "inner first"])
def test_two_instrumentations_exported_apart_count_once(store: SqlStore, order: str) -> None:
    """Two instrumentations of one client call (a wrapper's model-call span and, as its child, the
    SDK's own), neither the gateway's, count once whether they arrive in one export or in two."""
    root, outer, inner = _spans()
    inner = SpanRecord("p", inner.observation, inner.trace)  # the SDK's span: not the gateway's
    inner.observation.attributes.clear()
    if order == "one export":  # within one export the ingest's pass empties the inner span's usage
        from pilothouse.domain.duplicates import count_calls_once

        assert count_calls_once([root, outer, inner]) == 1
    batches = {
        "one export": [[root, outer, inner]],
        "outer first": [[root, outer], [inner]],
        "inner first": [[inner], [root, outer]],
    }[order]
    for batch in batches:
        store.write_spans(batch)
    detail = store.get_trace("p", TRACE)
    assert detail is not None and len(detail.observations) == 3
    assert detail.trace.usage.total == 120
    assert detail.trace.cost_usd == Money.from_usd("0.001")
    rollups = list(store.model_metrics("p", BASE_S, BASE_S + 3600, 3600))
    assert sum(m.sums.input_tokens for m in rollups) == 100
    if order != "one export":  # (within one export the emptied span stays a call of 0 tokens)
        assert sum(m.sums.count for m in rollups) == 1
