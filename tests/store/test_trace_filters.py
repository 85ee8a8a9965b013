"""Issue 23 item 7: the trace list filters by environment, release, and latency and cost ranges, on
SQLite and on the real PostgreSQL; bad values are a 400 that names the parameter."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from pilothouse.domain.money import Money
from pilothouse.domain.queries import TraceQuery
from pilothouse.domain.traces import Cost, Observation, ObservationKind, SpanRecord, TraceAttributes
from pilothouse.server.api import trace_query_from_params
from pilothouse.server.errors import ApiError
from pilothouse.store.sql import SqlStore

START = 1_700_000_000 * 10**9


def _write(store: SqlStore) -> dict[str, tuple[str, str, int, Money]]:
    """Six traces: environment, release, latency (ms) and cost each."""
    facts = {}
    records = []
    for i in range(6):
        env, release = ("prod", "staging")[i % 2], f"v{i % 3}"
        latency_ms, cost = 100 * (i + 1), Money.from_usd("0.01") * i
        trace = f"{i + 1:032x}"
        o = Observation(
            trace,
            f"{i + 1:016x}",
            "chat",
            START + i,
            START + i + latency_ms * 10**6,
            kind=ObservationKind.GENERATION,
            cost=Cost({"input": cost}, "v1"),
        )
        records.append(SpanRecord("p", o, TraceAttributes(environment=env, release=release)))
        facts[trace] = (env, release, latency_ms, cost)
    store.write_spans(records)
    return facts


def test_environment_release_and_ranges(store: SqlStore) -> None:
    facts = _write(store)
    cases = [
        (TraceQuery(environment="prod"), lambda f: f[0] == "prod"),
        (TraceQuery(release="v1"), lambda f: f[1] == "v1"),
        (TraceQuery(environment="staging", release="v2"), lambda f: f[0] == "staging" and f[1] == "v2"),
        (TraceQuery(min_latency_ms=200, max_latency_ms=400), lambda f: 200 <= f[2] <= 400),
        (
            TraceQuery(min_cost_usd=Money.from_usd("0.01"), max_cost_usd=Money.from_usd("0.03")),
            lambda f: Money.from_usd("0.01") <= f[3] <= Money.from_usd("0.03"),
        ),
    ]
    for query, keep in cases:
        found = {s.trace.id for s in store.list_traces("p", query).data}
        assert found == {t for t, f in facts.items() if keep(f)}, query


def test_range_parameters_are_checked() -> None:
    query = trace_query_from_params(
        QueryParams("environment=prod&release=v1&max_latency_ms=250&max_cost_usd=0.5"), START
    )
    assert (query.environment, query.release, query.max_latency_ms) == ("prod", "v1", 250.0)
    assert query.max_cost_usd == Money.from_usd("0.5")
    for bad in ("max_latency_ms=-1", "max_cost_usd=lots", "max_latency_ms=nan"):
        with pytest.raises(ApiError) as raised:
            trace_query_from_params(QueryParams(bad), START)
        assert raised.value.status == 400 and bad.split("=")[0] in raised.value.message
