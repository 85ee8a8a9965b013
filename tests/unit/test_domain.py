"""Pure core: usage arithmetic, the latency sketch, scores, cursors, time parsing."""

from __future__ import annotations

import random

import pytest

from pilothouse.domain.keys import Scope, hash_secret, new_secret, parse_scopes
from pilothouse.domain.money import Money
from pilothouse.domain.queries import InvalidQuery, TraceQuery, decode_cursor, encode_cursor
from pilothouse.domain.rollups import (
    ROLLUP_GRANULARITIES_S,
    RollupKey,
    RollupSums,
    TraceDelta,
    _add_rollup,
    _merge_trace,
    batch_deltas,
)
from pilothouse.domain.scores import make_score
from pilothouse.domain.sketch import BUCKETS, latency_bucket, quantile
from pilothouse.domain.timeparse import parse_duration_s, parse_time_ns
from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    ScoreDataType,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)


def test_usage_counts_each_token_once() -> None:
    u = Usage(input=10, output=5, cache_read=3, cache_write=2, reasoning=4)
    assert u.input_total == 15 and u.total == 20
    assert (u + u).total == 40 and (u + u).reasoning == 8
    assert Usage().is_empty and not u.is_empty


def test_sketch_quantiles_are_within_the_stated_error() -> None:
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(6, 1.2) for _ in range(20_000))
    counts = [0] * BUCKETS
    for v in values:
        counts[latency_bucket(v)] += 1
    for q in (0.5, 0.9, 0.95, 0.99):
        true = values[int(q * (len(values) - 1))]
        estimate = quantile(counts, q)
        assert estimate is not None and abs(estimate - true) / true < 0.08, q
    assert quantile([0] * BUCKETS, 0.5) is None
    assert latency_bucket(0) == 0 and latency_bucket(10**9) == BUCKETS - 1


def test_scores_are_validated_by_type() -> None:
    assert make_score(trace_id="t", name="ok", value=True).data_type is ScoreDataType.BOOLEAN
    assert make_score(trace_id="t", name="n", value=3).value == 3.0
    cat = make_score(trace_id="t", name="c", value="good")
    assert cat.data_type is ScoreDataType.CATEGORICAL and cat.string_value == "good"
    for bad in (
        dict(trace_id="", name="x", value=1),
        dict(trace_id="t", name=" ", value=1),
        dict(trace_id="t", name="x", value=float("nan")),
        dict(trace_id="t", name="x", value="yes", data_type="boolean"),
        dict(trace_id="t", name="x", value=1, source="robot"),
        dict(trace_id="t", name="x", value=1, data_type="vector"),
    ):
        with pytest.raises(ValueError):
            make_score(**bad)  # type: ignore[arg-type]


def test_cursors_round_trip_and_reject_garbage() -> None:
    assert decode_cursor(encode_cursor(123, "abc:def")) == (123, "abc:def")
    for bad in ("%%%", "bm90LWEtY3Vyc29y", ""):
        with pytest.raises(InvalidQuery):
            decode_cursor(bad)
    with pytest.raises(InvalidQuery):
        TraceQuery(limit=0)


def test_time_parsing() -> None:
    now = 1_000_000 * 10**9
    assert parse_time_ns("1h", now) == now - 3600 * 10**9
    assert parse_time_ns("1700000000", now) == 1_700_000_000 * 10**9
    assert parse_time_ns("2026-01-01T00:00:00Z", now) == parse_time_ns("2026-01-01T00:00:00", now)
    assert parse_duration_s("7d") == 7 * 86400
    with pytest.raises(ValueError, match="not a time"):
        parse_time_ns("last tuesday", now)


def test_keys_and_scopes() -> None:
    secret = new_secret()
    assert secret.startswith("ph-") and len(secret) > 40 and hash_secret(secret) != secret
    assert parse_scopes("read, ingest") == {Scope.READ, Scope.INGEST}
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes("read,write")


def _records(seed: int) -> list[SpanRecord]:
    """Spans of a few traces in random order: roots and children, named or not, with tags, costs,
    errors and unpriced model calls, over two hours."""
    rng = random.Random(seed)
    out = []
    for i in range(300):
        trace = f"{rng.randrange(40):032x}"
        root = rng.random() < 0.3
        kind = rng.choice([ObservationKind.GENERATION, ObservationKind.SPAN, ObservationKind.EMBEDDING])
        start = 1_700_000_000 * 10**9 + rng.randrange(7200 * 10**9)
        observation = Observation(
            trace_id=trace,
            id=f"{i:016x}",
            name=rng.choice(["chat", "search", "embed"]),
            start_ns=start,
            end_ns=start + rng.randrange(10**10),
            kind=kind,
            parent_id=None if root else f"{rng.randrange(10**6):016x}",
            status=rng.choice([Status.OK, Status.ERROR, Status.UNSET]),
            model=rng.choice([None, "m1", "m2"]),
            usage=Usage(rng.randrange(50), rng.randrange(50), rng.randrange(5), 0, 0),
            cost=rng.choice([None, Cost({"input": Money.from_usd(rng.random() / 100)})]),
        )
        facts = TraceAttributes(
            name=rng.choice([None, None, "named"]),
            user_id=rng.choice([None, "u1", "u2"]),
            tags=tuple(rng.sample(["a", "b", "c"], rng.randrange(3))) * rng.randrange(1, 3),
            metadata=rng.choice([{}, {"k": i}]),
            input=rng.choice([None, f"in {i}"]),
        )
        out.append(SpanRecord("p", observation, facts))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_batch_deltas_agree_with_span_by_span_merging(seed: int) -> None:
    """The batch arithmetic (a trace's first span taken whole, hour rollups summed from minute ones)
    equals merging every span into empty deltas one at a time at every granularity."""
    records = _records(seed)
    deltas = batch_deltas(records)
    traces: dict[tuple[str, str], TraceDelta] = {}
    rollups: dict[RollupKey, RollupSums] = {}
    for record in records:
        o = record.observation
        key = (record.project_id, o.trace_id)
        if key not in traces:
            traces[key] = TraceDelta(record.project_id, o.trace_id, o.start_ns, o.end_ns)
        _merge_trace(traces[key], record)
        if o.kind.is_model_call or not o.usage.is_empty:
            for granularity in ROLLUP_GRANULARITIES_S:
                _add_rollup(rollups, record, granularity)
    assert deltas.traces == traces
    assert deltas.rollups.keys() == rollups.keys()
    for key, expected in rollups.items():
        got = deltas.rollups[key]
        assert got.latency_ms_sum == pytest.approx(expected.latency_ms_sum, rel=1e-12)
        got.latency_ms_sum = expected.latency_ms_sum
        assert got == expected  # costs too: sums of Money are exact in any order
