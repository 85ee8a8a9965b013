"""What one batch of received spans adds to the trace summaries and the time rollups.

Pure arithmetic, computed once per batch so that the store writes one row per trace and per rollup
bucket instead of one per span.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pilothouse.domain.sketch import BUCKETS, latency_bucket
from pilothouse.domain.traces import SpanRecord, Status

ROLLUP_GRANULARITIES_S = (60, 3600)


@dataclass(slots=True)
class TraceDelta:
    """What a batch says about one trace; the store merges it into the stored summary."""

    project_id: str
    trace_id: str
    start_ns: int
    end_ns: int
    name: str | None = None
    name_is_final: bool = False  # from the root span or set explicitly: overrides a stored name
    root_span_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    environment: str | None = None
    release: str | None = None
    input: str | None = None
    output: str | None = None
    model: str | None = None
    observation_count: int = 0
    error_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_count: int = 0


@dataclass(slots=True)
class RollupDelta:
    """Sums over the model calls of one (project, bucket, model, name)."""

    count: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    latency_ms_sum: float = 0.0
    latency_counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)


RollupKey = tuple[int, str, int, str, str]  # granularity_s, project, bucket start (s), model, name


@dataclass(slots=True)
class BatchDeltas:
    """Everything a batch adds beyond its span rows."""

    traces: dict[tuple[str, str], TraceDelta] = field(default_factory=dict)
    rollups: dict[RollupKey, RollupDelta] = field(default_factory=dict)


def _merge_trace(delta: TraceDelta, record: SpanRecord) -> None:
    o, t = record.observation, record.trace
    delta.start_ns = min(delta.start_ns, o.start_ns)
    delta.end_ns = max(delta.end_ns, o.end_ns)
    if t.name:
        delta.name, delta.name_is_final = t.name, True
    elif o.is_root and not delta.name_is_final:
        delta.name, delta.name_is_final = o.name, True
    elif delta.name is None:
        delta.name = o.name
    if o.is_root:
        delta.root_span_id = o.id
    if t.user_id is not None:
        delta.user_id = t.user_id
    if t.session_id is not None:
        delta.session_id = t.session_id
    if t.environment is not None:
        delta.environment = t.environment
    if t.release is not None:
        delta.release = t.release
    if t.input is not None:
        delta.input = t.input
    if t.output is not None:
        delta.output = t.output
    for tag in t.tags:
        if tag not in delta.tags:
            delta.tags.append(tag)
    if t.metadata:
        delta.metadata.update(t.metadata)
    delta.observation_count += 1
    if o.status is Status.ERROR:
        delta.error_count += 1
    if o.model and delta.model is None:
        delta.model = o.model
    u = o.usage
    delta.input_tokens += u.input_total
    delta.output_tokens += u.output
    delta.total_tokens += u.total
    if o.cost is not None:
        delta.cost_usd += o.cost.total
    elif o.kind.is_model_call:
        delta.unpriced_count += 1


def _add_rollup(deltas: BatchDeltas, record: SpanRecord) -> None:
    o = record.observation
    seconds = o.start_ns // 1_000_000_000
    latency_ms = o.duration_ns / 1e6
    lat_bucket = latency_bucket(latency_ms)
    model = o.model or o.request_model or ""
    u = o.usage
    for granularity in ROLLUP_GRANULARITIES_S:
        bucket = seconds - seconds % granularity
        key = (granularity, record.project_id, bucket, model, o.name)
        r = deltas.rollups.get(key)
        if r is None:
            r = deltas.rollups[key] = RollupDelta()
        r.count += 1
        r.errors += o.status is Status.ERROR
        r.input_tokens += u.input
        r.output_tokens += u.output
        r.cache_read_tokens += u.cache_read
        r.cache_write_tokens += u.cache_write
        r.reasoning_tokens += u.reasoning
        if o.cost is not None:
            r.cost_usd += o.cost.total
        else:
            r.unpriced += 1
        r.latency_ms_sum += latency_ms
        r.latency_counts[lat_bucket] += 1


def batch_deltas(records: Iterable[SpanRecord]) -> BatchDeltas:
    """Trace summaries and rollups that ``records`` add (model calls only go into the rollups)."""
    deltas = BatchDeltas()
    traces = deltas.traces
    for record in records:
        o = record.observation
        key = (record.project_id, o.trace_id)
        delta = traces.get(key)
        if delta is None:
            delta = traces[key] = TraceDelta(record.project_id, o.trace_id, o.start_ns, o.end_ns)
        _merge_trace(delta, record)
        if o.kind.is_model_call or not o.usage.is_empty:
            _add_rollup(deltas, record)
    return deltas
