"""What one batch of received spans adds to the trace summaries and the time rollups.

Pure arithmetic, computed once per batch so that the store writes one row per trace and per rollup
bucket instead of one per span.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pilothouse.domain.money import Money
from pilothouse.domain.sketch import BUCKETS, add_counts, latency_bucket
from pilothouse.domain.traces import REFUSED_PRICE_VERSION, Cost, SpanRecord, Status, Usage

ROLLUP_GRANULARITIES_S = (60, 3600)
# The dimension rollups have days too: a month of hours by end user is too many rows for a page.
DIM_GRANULARITIES_S = (60, 3600, 86400)
# The price version of the $0 a call traced twice counts for in its second span (the first counts it).
DUPLICATE_PRICE_VERSION = "counted-by-another-span"


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
class RollupSums:
    """Sums over model calls: one rollup bucket's (project, bucket, model, name), or several merged.
    Its fields are THE list of the rollups' measures: the tables' columns, the rows written and read
    and the dashboards' figures all come from :data:`ROLLUP_SUMS`, derived from them."""

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
    refused: int = 0  # calls the gateway turned away before any upstream (not in ``errors``)
    saved_usd: Money = Money.ZERO  # what caching saved against the full price (migration 0029)
    latency_counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    # The time to first token of the streamed calls, as a sketch like the latency's: the model rollups
    # only (migration 0029); empty without a streamed call. Its total is the number of streamed calls.
    ttft_counts: list[int] = field(default_factory=list)

    def merge(self, other: RollupSums) -> None:
        """Add ``other``'s sums to these."""
        for name in ROLLUP_SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency_counts = add_counts(self.latency_counts, other.latency_counts)
        if other.ttft_counts:
            self.ttft_counts = add_counts(self.ttft_counts, other.ttft_counts)

    def stored(self) -> tuple[Any, ...]:
        """The sums as the store keeps them, in :data:`ROLLUP_SUMS` order (amounts in USD)."""
        values = [getattr(self, name) for name in ROLLUP_SUMS]
        for i in MONEY_INDEXES:
            values[i] = values[i].usd
        return tuple(values)

    @classmethod
    def from_totals(
        cls, totals: Sequence[Any], latency_counts: list[int], ttft_counts: list[int] | None = None
    ) -> RollupSums:
        """Sums from running totals of stored rows (:func:`add_stored`)."""
        sums = cls(latency_counts=latency_counts, ttft_counts=ttft_counts or [])
        for name, value in zip(ROLLUP_SUMS, totals, strict=True):
            setattr(sums, name, value)
        for i in MONEY_INDEXES:
            setattr(sums, ROLLUP_SUMS[i], Money(totals[i]))
        return sums

    @property
    def latency_ms_avg(self) -> float:
        """Mean latency of the calls (0 without calls)."""
        return self.latency_ms_sum / self.count if self.count else 0.0


# The rollups' measures, in the order of the tables' columns and of every stored row.
ROLLUP_SUMS: tuple[str, ...] = tuple(
    f.name for f in fields(RollupSums) if f.name not in ("latency_counts", "ttft_counts")
)
COST_INDEX = ROLLUP_SUMS.index("cost_usd")
# The sums that are amounts of money: USD float columns, added in whole pico-dollars (Money).
MONEY_SUMS = ("cost_usd", "saved_usd")
MONEY_INDEXES = tuple(ROLLUP_SUMS.index(name) for name in MONEY_SUMS)


def add_stored(totals: list[Any] | None, row: Sequence[Any]) -> list[Any]:
    """Running totals of stored rows' sums (each in :data:`ROLLUP_SUMS` order, amounts in USD), the
    amounts added exactly in whole pico-dollars; a new list when ``totals`` is None."""
    row = list(row)
    for i in MONEY_INDEXES:
        row[i] = Money.from_usd(row[i] or 0).pico
    if totals is None:
        return row
    for i, value in enumerate(row):
        totals[i] += value
    return totals


RollupKey = tuple[int, str, int, str, str]  # granularity_s, project, bucket start (s), model, name
# granularity_s, project, bucket start (s), dimension (one of DIMENSIONS), value ("" for none)
DimKey = tuple[int, str, int, str, str]

# The dimensions model calls are also summed by (exact breakdowns by end user, virtual key, prompt
# version and tag). A call counts once per dimension, and once per tag of its trace under "tag".
DIMENSIONS = ("user", "key", "prompt", "tag")
MAX_DIM_VALUE_CHARS = 200  # a stored dimension value is cut to this: clients choose user ids and tags
MAX_TAGS_ROLLED_UP = 20  # a call counts under at most this many of its trace's tags


@dataclass(slots=True)
class BatchDeltas:
    """Everything a batch adds beyond its span rows."""

    traces: dict[tuple[str, str], TraceDelta] = field(default_factory=dict)
    rollups: dict[RollupKey, RollupSums] = field(default_factory=dict)
    dim_rollups: dict[DimKey, RollupSums] = field(default_factory=dict)


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


def _add_rollup(rollups: dict[Any, RollupSums], record: SpanRecord, granularity: int, *last: str) -> None:
    """Add a model call to the bucket keyed (granularity, project, bucket, ``last``...); ``last`` is
    (model, name) when not given."""
    o = record.observation
    seconds = o.start_ns // 1_000_000_000
    latency_ms = o.duration_ns / 1e6
    u = o.usage
    key = (
        granularity,
        record.project_id,
        seconds - seconds % granularity,
        *(last or (o.model or o.request_model or "", o.name)),
    )
    r = rollups.get(key)
    if r is None:
        r = rollups[key] = RollupSums()
    r.count += 1
    if o.status is Status.ERROR:
        if o.cost is not None and o.cost.price_version == REFUSED_PRICE_VERSION:
            r.refused += 1
        else:
            r.errors += 1
    r.input_tokens += u.input
    r.output_tokens += u.output
    r.cache_read_tokens += u.cache_read
    r.cache_write_tokens += u.cache_write
    r.reasoning_tokens += u.reasoning
    if o.cost is not None:
        r.cost_usd += o.cost.total
        r.saved_usd += o.cost.saved
    else:
        r.unpriced += 1
    r.latency_ms_sum += latency_ms
    r.latency_counts[latency_bucket(latency_ms)] += 1
    if not last and o.ttft_ns is not None:  # the model rollups keep the TTFT sketch, the others not
        if not r.ttft_counts:
            r.ttft_counts = [0] * BUCKETS
        r.ttft_counts[latency_bucket(o.ttft_ns / 1e6)] += 1


def _coarser(rollups: dict[Any, RollupSums], granularity: int) -> dict[Any, RollupSums]:
    """The rollups of a coarser granularity, summed from finer ones (granularities divide each other)."""
    out: dict[Any, RollupSums] = {}
    for (_, project, bucket, a, b), r in rollups.items():
        key = (granularity, project, bucket - bucket % granularity, a, b)
        total = out.get(key)
        if total is None:
            total = out[key] = RollupSums()
        total.merge(r)
    return out


def call_key(record: SpanRecord) -> str:
    """The virtual key a call was metered with by this server's gateway ("" for none, and for every
    span a client sent, whatever key it claims)."""
    if not record.metered:
        return ""
    attrs = record.observation.attributes
    return str(attrs.get("gateway.key_id") or "") if attrs else ""


def call_prompt(o: Any) -> str:
    """ "name@version" (or "name") of the prompt a call used, "" for none."""
    if not o.prompt_name:
        return ""
    return f"{o.prompt_name}@{o.prompt_version}" if o.prompt_version else str(o.prompt_name)


def _dimension_values(
    record: SpanRecord, delta: TraceDelta, stored: tuple[str | None, Sequence[str]] | None
) -> list[tuple[str, str]]:
    """(dimension, value) pairs a model call counts under; the user and tags are its trace's (this
    batch's or, failing that, those stored with the trace by an earlier batch)."""
    user = record.trace.user_id or delta.user_id or (stored[0] if stored else None) or ""
    tags = delta.tags or (list(stored[1]) if stored else [])
    pairs = [
        ("user", user[:MAX_DIM_VALUE_CHARS]),
        ("key", call_key(record)),
        ("prompt", call_prompt(record.observation)[:MAX_DIM_VALUE_CHARS]),
    ]
    unique_tags = list(dict.fromkeys(tag[:MAX_DIM_VALUE_CHARS] for tag in tags))[:MAX_TAGS_ROLLED_UP]
    pairs.extend(("tag", tag) for tag in unique_tags or [""])
    return pairs


def _uncounted(record: SpanRecord) -> SpanRecord:
    """The record of a call counted by another span (:mod:`pilothouse.domain.duplicates`): no usage
    and a $0 cost, so that the trace totals leave it out."""
    o = replace(record.observation, usage=Usage(), cost=Cost({}, DUPLICATE_PRICE_VERSION))
    return replace(record, observation=o)


# A call's measures (_call_measures): the integer sums in ROLLUP_SUMS order but for the latency, which
# is the float at _LATENCY, then the latency's histogram bucket at _BUCKET and the TTFT's at _TTFT_BUCKET
# (-1 for a call without one).
_LATENCY = ROLLUP_SUMS.index("latency_ms_sum")
_BUCKET = len(ROLLUP_SUMS)
_TTFT_BUCKET = _BUCKET + 1
_INT_SUMS = [i for i in range(len(ROLLUP_SUMS)) if i != _LATENCY]
_INT64_MAX = 2**63 - 1


def _call_measures(record: SpanRecord) -> tuple[Any, ...]:
    """What one model call adds to each rollup bucket it counts in (:func:`_add_rollup` of one call,
    computed once for all of them): :data:`ROLLUP_SUMS` in order, amounts in pico-dollars, then the
    latency's histogram bucket and the TTFT's (-1: none)."""
    o = record.observation
    u, cost = o.usage, o.cost
    latency_ms = max(0, o.end_ns - o.start_ns) / 1e6  # Observation.duration_ns, inlined (per call)
    errors = refused = 0
    if o.status is Status.ERROR:
        if cost is not None and cost.price_version == REFUSED_PRICE_VERSION:
            refused = 1
        else:
            errors = 1
    return (
        1,
        errors,
        u.input,
        u.output,
        u.cache_read,
        u.cache_write,
        u.reasoning,
        0 if cost is None else cost.total.pico,
        1 if cost is None else 0,
        latency_ms,
        refused,
        0 if cost is None else cost.saved.pico,
        latency_bucket(latency_ms),
        -1 if o.ttft_ns is None else latency_bucket(o.ttft_ns / 1e6),
    )


def _to_sums(
    row: Sequence[Any], latency_ms_sum: float, counts: list[int], ttft_counts: list[int] | None = None
) -> RollupSums:
    sums = RollupSums(*row, latency_counts=counts, ttft_counts=ttft_counts or [])  # type: ignore[misc]
    sums.latency_ms_sum = latency_ms_sum
    for i in MONEY_INDEXES:
        setattr(sums, ROLLUP_SUMS[i], Money(row[i]))
    return sums


def _sums_one_by_one(
    measures: Sequence[tuple[Any, ...]], calls: Sequence[int], with_ttft: bool
) -> RollupSums:
    """The sums of ``measures[i]`` for ``i`` in ``calls``, added in that order (exact integers)."""
    totals = [0] * len(ROLLUP_SUMS)
    latency = 0.0
    counts = [0] * BUCKETS
    ttft = [0] * BUCKETS
    for i in calls:
        m = measures[i]
        for j in _INT_SUMS:
            totals[j] += m[j]
        latency += m[_LATENCY]
        counts[m[_BUCKET]] += 1
        if m[_TTFT_BUCKET] >= 0:
            ttft[m[_TTFT_BUCKET]] += 1
    return _to_sums(totals, latency, counts, ttft if with_ttft and any(ttft) else None)


class _Measures:
    """The calls' measures (:func:`_call_measures`) once as numpy arrays, for :meth:`bucket_sums`."""

    def __init__(self, measures: Sequence[tuple[Any, ...]]) -> None:
        import numpy as np

        self.np = np
        self.rows = measures
        try:
            self.ints = np.array([[m[j] for j in _INT_SUMS] for m in measures], dtype=np.int64)
            peak = int(np.abs(self.ints).max())
        except OverflowError:
            peak = _INT64_MAX
        # sums int64 might not hold (tokens or costs a client made up) are added as Python integers
        self.python_ints = peak * len(measures) > _INT64_MAX
        self.latency = np.array([m[_LATENCY] for m in measures], dtype=np.float64)
        self.bucket = np.array([m[_BUCKET] for m in measures], dtype=np.intp)
        self.ttft_bucket = np.array([m[_TTFT_BUCKET] for m in measures], dtype=np.intp)
        self.any_ttft = bool((self.ttft_bucket >= 0).any())

    def bucket_sums(
        self, keys: Mapping[Any, int], calls: Sequence[int], codes: Sequence[int], with_ttft: bool = False
    ) -> dict[Any, RollupSums]:
        """The sums of every bucket in ``keys`` (each to its code): call ``calls[k]`` counts in the
        bucket of code ``codes[k]``, the calls of each bucket in the order they come. Exactly what
        :func:`_add_rollup` one call at a time makes: integers as int64 (or Python's), the latencies by
        ``bincount``, which adds each bucket's in order from 0.0 as Python does. ``with_ttft``: the
        buckets' TTFT sketches too (the model rollups')."""
        if not keys:
            return {}
        if self.python_ints:
            members: dict[int, list[int]] = {}
            for call, code in zip(calls, codes, strict=True):
                members.setdefault(code, []).append(call)
            return {key: _sums_one_by_one(self.rows, members[code], with_ttft) for key, code in keys.items()}
        np = self.np
        index = np.asarray(calls, dtype=np.intp)
        code = np.asarray(codes, dtype=np.intp)
        n = len(keys)
        totals = np.zeros((n, len(_INT_SUMS)), dtype=np.int64)
        np.add.at(totals, code, self.ints[index])
        latency = np.bincount(code, weights=self.latency[index], minlength=n).tolist()
        counts = np.bincount(code * BUCKETS + self.bucket[index], minlength=n * BUCKETS).reshape(n, BUCKETS)
        ttft: list[list[int] | None] = [None] * n
        if with_ttft and self.any_ttft:  # the sketches of the buckets with a streamed call only
            bucket = self.ttft_bucket[index]
            streamed = bucket >= 0
            held, at = np.unique(code[streamed], return_inverse=True)
            hists = np.bincount(at * BUCKETS + bucket[streamed], minlength=len(held) * BUCKETS)
            for held_code, hist in zip(
                held.tolist(), hists.reshape(len(held), BUCKETS).tolist(), strict=True
            ):
                ttft[held_code] = hist
        out = {}
        for key, row, latency_sum, hist, ttft_hist in zip(
            keys, totals.tolist(), latency, counts.tolist(), ttft, strict=True
        ):
            row.insert(_LATENCY, 0.0)
            out[key] = _to_sums(row, latency_sum, hist, ttft_hist)
        return out


def batch_deltas(
    records: Iterable[SpanRecord],
    stored: Mapping[tuple[str, str], tuple[str | None, Sequence[str]]] | None = None,
    duplicates: Set[tuple[str, str, str]] = frozenset(),
) -> BatchDeltas:
    """Trace summaries and rollups that ``records`` add (model calls only go into the rollups).
    ``stored`` holds the user id and tags already stored with the batch's traces, by (project, trace
    id): a model call whose trace named its user in an earlier batch counts under that user.
    ``duplicates`` names (project, trace id, span id) the calls counted by another span: their tokens
    and cost count neither in the trace totals nor in the rollups.

    The rollups equal adding each call to each of its buckets with :func:`_add_rollup` (about 13 per
    call: 2 granularities by model, 3 by each of 4+ dimensions), but a call's measures are computed
    once and each bucket sums its calls at the end."""
    deltas = BatchDeltas()
    traces = deltas.traces
    finest, *coarser = ROLLUP_GRANULARITIES_S
    calls: list[SpanRecord] = []
    for record in records:
        o = record.observation
        key = (record.project_id, o.trace_id)
        if duplicates and (record.project_id, o.trace_id, o.id) in duplicates:
            record = _uncounted(record)
            delta = traces.get(key)
            if delta is None:
                traces[key] = _new_trace(record)
            else:
                _merge_trace(delta, record)
            continue
        delta = traces.get(key)
        if delta is None:
            traces[key] = _new_trace(record)
        else:
            _merge_trace(delta, record)
        if o.kind.is_model_call or not o.usage.is_empty:
            calls.append(record)
    if not calls:
        return deltas
    measures = [_call_measures(record) for record in calls]
    # Each call's buckets as codes (numbered in the order of first use), with (call, code) pairs in the
    # calls' order: by model at the finest granularity, by dimension at the finest too, whose codes
    # then map to those of the coarser buckets.
    model_keys: dict[RollupKey, int] = {}
    model_codes: list[int] = []
    dim_keys: dict[DimKey, int] = {}
    dim_calls: list[int] = []
    dim_codes: list[int] = []
    stored_facts: Mapping[tuple[str, str], tuple[str | None, Sequence[str]]] = stored or {}
    dim_finest = DIM_GRANULARITIES_S[0]
    for i, record in enumerate(calls):  # after the loop: a trace's user and tags may come from a later span
        o = record.observation
        project = record.project_id
        seconds = o.start_ns // 1_000_000_000
        model_key = (finest, project, seconds - seconds % finest, o.model or o.request_model or "", o.name)
        model_codes.append(model_keys.setdefault(model_key, len(model_keys)))
        key = (project, o.trace_id)
        bucket = seconds - seconds % dim_finest
        for dimension, value in _dimension_values(record, traces[key], stored_facts.get(key)):
            dim_calls.append(i)
            dim_codes.append(
                dim_keys.setdefault((dim_finest, project, bucket, dimension, value), len(dim_keys))
            )
    sums = _Measures(measures)
    rollups = sums.bucket_sums(model_keys, range(len(calls)), model_codes, with_ttft=True)
    deltas.rollups.update(rollups)
    deltas.dim_rollups.update(sums.bucket_sums(dim_keys, dim_calls, dim_codes))
    for granularity in DIM_GRANULARITIES_S[1:]:
        coarse: dict[DimKey, int] = {}
        to_coarse = [
            coarse.setdefault(
                (granularity, project, bucket - bucket % granularity, dimension, value), len(coarse)
            )
            for _, project, bucket, dimension, value in dim_keys
        ]
        codes = [to_coarse[code] for code in dim_codes]
        deltas.dim_rollups.update(sums.bucket_sums(coarse, dim_calls, codes))
    for granularity in coarser:
        deltas.rollups.update(_coarser(rollups, granularity))
    return deltas
