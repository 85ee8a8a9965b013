"""What one batch of received spans adds to the trace summaries and the time rollups.

Pure arithmetic, computed once per batch so that the store writes one row per trace and per rollup
bucket instead of one per span.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pilothouse.domain.money import Money
from pilothouse.domain.sketch import BUCKETS, add_counts, latency_bucket
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
    cost_usd: Money = Money.ZERO
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
    cost_usd: Money = Money.ZERO
    unpriced: int = 0
    latency_ms_sum: float = 0.0
    latency_counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def merge(self, other: RollupDelta) -> None:
        """Add ``other``'s sums to these."""
        self.count += other.count
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cost_usd += other.cost_usd
        self.unpriced += other.unpriced
        self.latency_ms_sum += other.latency_ms_sum
        self.latency_counts = add_counts(self.latency_counts, other.latency_counts)


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


def _new_trace(record: SpanRecord) -> TraceDelta:
    """The delta of a trace's first span in the batch (what :func:`_merge_trace` would make of it)."""
    o, t = record.observation, record.trace
    u, cost = o.usage, o.cost
    if t.name:
        name, final = t.name, True
    else:
        name, final = o.name, o.parent_id is None
    input_tokens = u.input + u.cache_read + u.cache_write  # Usage.input_total, inlined (per span)
    return TraceDelta(
        record.project_id,
        o.trace_id,
        o.start_ns,
        o.end_ns,
        name,
        final,
        o.id if o.parent_id is None else None,
        t.user_id,
        t.session_id,
        list(dict.fromkeys(t.tags)) if t.tags else [],
        dict(t.metadata) if t.metadata else {},
        t.environment,
        t.release,
        t.input,
        t.output,
        o.model or None,
        1,
        1 if o.status is Status.ERROR else 0,
        input_tokens,
        u.output,
        input_tokens + u.output,
        Money.ZERO if cost is None else cost.total,
        1 if cost is None and o.kind.is_model_call else 0,
    )


def _add_rollup(rollups: dict[RollupKey, RollupDelta], record: SpanRecord, granularity: int) -> None:
    o = record.observation
    seconds = o.start_ns // 1_000_000_000
    latency_ms = o.duration_ns / 1e6
    u = o.usage
    key = (
        granularity,
        record.project_id,
        seconds - seconds % granularity,
        o.model or o.request_model or "",
        o.name,
    )
    r = rollups.get(key)
    if r is None:
        r = rollups[key] = RollupDelta()
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
    r.latency_counts[latency_bucket(latency_ms)] += 1


def _coarser(rollups: dict[RollupKey, RollupDelta], granularity: int) -> dict[RollupKey, RollupDelta]:
    """The rollups of a coarser granularity, summed from finer ones (granularities divide each other)."""
    out: dict[RollupKey, RollupDelta] = {}
    for (_, project, bucket, model, name), r in rollups.items():
        key = (granularity, project, bucket - bucket % granularity, model, name)
        total = out.get(key)
        if total is None:
            total = out[key] = RollupDelta()
        total.merge(r)
    return out


def batch_deltas(records: Iterable[SpanRecord]) -> BatchDeltas:
    """Trace summaries and rollups that ``records`` add (model calls only go into the rollups)."""
    deltas = BatchDeltas()
    traces = deltas.traces
    finest, *coarser = ROLLUP_GRANULARITIES_S
    rollups: dict[RollupKey, RollupDelta] = {}
    for record in records:
        o = record.observation
        key = (record.project_id, o.trace_id)
        delta = traces.get(key)
        if delta is None:
            traces[key] = _new_trace(record)
        else:
            _merge_trace(delta, record)
        if o.kind.is_model_call or not o.usage.is_empty:
            _add_rollup(rollups, record, finest)
    deltas.rollups.update(rollups)
    for granularity in coarser:
        deltas.rollups.update(_coarser(rollups, granularity))
    return deltas
