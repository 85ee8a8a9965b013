"""Pure core: usage arithmetic, the latency sketch, scores, cursors, time parsing."""

from __future__ import annotations

import random

import pytest

from pilothouse.domain.keys import Scope, hash_secret, new_secret, parse_scopes
from pilothouse.domain.queries import InvalidQuery, TraceQuery, decode_cursor, encode_cursor
from pilothouse.domain.scores import make_score
from pilothouse.domain.sketch import BUCKETS, latency_bucket, quantile
from pilothouse.domain.timeparse import parse_duration_s, parse_time_ns
from pilothouse.domain.traces import ScoreDataType, Usage


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
