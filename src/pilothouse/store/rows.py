"""Conversions between domain objects and table rows (both directions), kept apart from the queries.

Money crosses the store's boundary here and in the few queries that sum it: amounts are stored in
float64 USD columns (``cost_usd``, ``saved_usd``, ``limit_usd``, ...; line items as JSON numbers),
written as :attr:`Money.usd <pilothouse.domain.money.Money.usd>` and read back with
:meth:`Money.from_usd <pilothouse.domain.money.Money.from_usd>`, which rounds to the nearest
pico-dollar (Money's one rounding rule). Why floats, and no migration to integer pico-dollar columns:

- A float64 resolves any amount below $8,192 to better than a pico-dollar, so every amount stored as
  it is (a call's cost and line items, what caching saved, a budget's limit, an eval result's cost)
  reads back as exactly the Money that was written.
- Queries that sum stored costs (a budget's spend, a user's or a session's) add them as whole
  pico-dollars (:func:`pilothouse.store.sql.usd_sum`), and rollup rows are added up as Money: exact.
- The two running sums the database keeps (a trace's total merged over batches, a rollup bucket) add
  float64 rounding of about 1e-16 of the total per merge, which the rounding to the pico-dollar on the
  way out takes away while it stays under half a pico-dollar (a trace's total; a bucket under a
  dollar). A bucket of thousands of calls in the hundreds of dollars can read a few pico-dollars off:
  ten orders of magnitude under a cent, never in a format for people (the API rounded such sums to 12
  decimals before Money too).
- Integer columns would make those two exact, but a BIGINT of pico-dollars overflows at $9.2M (SQLite's
  ``SUM`` raises there), changing a SQLite column's type rebuilds the table (every stored span, at
  start-up), and ingest writes the same 8 bytes per value either way.
"""

from __future__ import annotations

import functools
import struct
from array import array
from collections.abc import Mapping
from typing import Any

import orjson
import zstandard
from lz4.block import compress as lz4_compress
from lz4.block import decompress as lz4_decompress

from pilothouse.domain.money import Money
from pilothouse.domain.rollups import ROLLUP_SUMS, RollupSums, TraceDelta
from pilothouse.domain.sketch import add_counts
from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    Score,
    ScoreDataType,
    ScoreSource,
    SpanRecord,
    Status,
    Trace,
    Usage,
)

# On SQLite, long text is stored compressed as a BLOB; text columns hold either str or bytes, and
# unpack() reads both. PostgreSQL compresses only rows over ~2 KB itself (its TOAST threshold, which
# toast_tuple_target does not lower), and a span row is ~1.3 KB: its span texts (input, output,
# attributes) are ``bytea`` holding either a text's UTF-8 or the same packed bytes (pack_bytes; migration
# 0025), and its searches read the unpacked ones in Python (SqlStore._contains).
# Texts under LZ4_MAX_CHARS (most prompts and answers) are lz4 blocks: at those sizes lz4 packs and
# unpacks several times faster than zstd (and a text search unpacks every text it reads), for more
# bytes. Longer texts are zstd frames, where its better ratio adds up. `python benchmarks/ingest.py`
# measures the stored bytes and CPU per span, `python benchmarks/query.py` the searches. A zstd frame
# starts with its magic number; an lz4 block with its length (4 bytes, little-endian), never that number.
PACK_MIN_CHARS = 512
PG_PACK_MIN_CHARS = 256  # PostgreSQL: see pack_bytes
LZ4_MAX_CHARS = 4096
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_compressor = zstandard.ZstdCompressor(level=1)
_decompressor = zstandard.ZstdDecompressor()
_pg_compressor = zstandard.ZstdCompressor(
    level=3
)  # pack_bytes: 0.37 of a 700-character prompt (level 1: 0.40)


def pack(text: str | None) -> str | bytes | None:
    """Compressed bytes for long text, the text itself otherwise."""
    if text is None or len(text) < PACK_MIN_CHARS:
        return text
    if len(text) < LZ4_MAX_CHARS:
        packed: bytes = lz4_compress(text.encode())
        return packed
    return _compressor.compress(text.encode())


def pack_bytes(text: str | None) -> bytes | None:
    """PostgreSQL's form of :func:`pack` (its span text columns are ``bytea``): text of
    :data:`PG_PACK_MIN_CHARS` or more as a zstd frame, shorter text as its UTF-8 bytes. A frame starts
    with zstd's magic number, never valid UTF-8, which :func:`unpack` tells apart (a short text with a
    NUL, which PostgreSQL text never holds and an lz4 block's length has, is packed too). zstd, not lz4:
    on the benchmark's prompts it stores 0.40 of the bytes against lz4's 0.56 (0.54 against 0.71 at
    300 characters), for ~10 us of CPU per text; the database's bytes are what PostgreSQL pays for."""
    if text is None:
        return None
    if len(text) < PG_PACK_MIN_CHARS and "\x00" not in text:
        return text.encode()
    return _pg_compressor.compress(text.encode())


def is_packed(value: bytes) -> bool:
    """Whether ``value`` (bytes of a text column) is compressed, rather than a text's UTF-8."""
    return value[:4] == ZSTD_MAGIC or (len(value) >= 4 and value[2] == 0 and value[3] == 0)


def unpack(value: str | bytes | None) -> str | None:
    """Inverse of :func:`pack` and :func:`pack_bytes`."""
    if isinstance(value, bytes):
        if value[:4] == ZSTD_MAGIC:
            return _decompressor.decompress(value).decode()
        if len(value) >= 4 and value[2] == 0 and value[3] == 0:
            raw: bytes = lz4_decompress(value)
            return raw.decode()
        return value.decode()
    return value


def dumps(value: Any) -> str | None:
    """JSON text for a column, or NULL for an empty container."""
    if not value:
        return None
    return orjson.dumps(value, default=str).decode()


def loads(text: str | None, empty: Any) -> Any:
    """Inverse of :func:`dumps`."""
    return orjson.loads(text) if text else empty


def cost_details(cost: Cost) -> str | None:
    """The ``cost_details`` column: the line items as JSON numbers (USD); NULL for none."""
    if not cost.items:
        return None
    return orjson.dumps({name: amount.usd for name, amount in cost.items.items()}).decode()


def cost_from_columns(details: str | None, price_version: str | None, saved_usd: float | None) -> Cost | None:
    """Inverse of :func:`cost_details` with the ``price_version`` and ``saved_usd`` columns (None when
    the call has no cost)."""
    items = loads(details, None)
    if items is None:
        return None
    return Cost(
        {name: Money.from_usd(value) for name, value in items.items()},
        price_version,
        Money.ZERO if saved_usd is None else Money.from_usd(saved_usd),
    )


def money_or_none(usd: float | None) -> Money | None:
    """A nullable USD column as Money."""
    return None if usd is None else Money.from_usd(usd)


def metered_key(record: SpanRecord) -> str | None:
    """The ``key_id`` column of a span: the virtual key of a call this server's gateway metered, ``""``
    for one it metered with no key (the admin secret, an in-process caller), NULL for every span a
    client sent (whatever ``gateway.key_id`` it claims): budgets are seeded from the metered spans only
    (:meth:`pilothouse.store.costs.CostStore.spend_since`)."""
    if not record.metered:
        return None
    attrs = record.observation.attributes
    return str(attrs.get("gateway.key_id") or "") if attrs else ""


def span_row(record: SpanRecord, trace_pk: int, compress: bool) -> tuple[Any, ...]:
    """The ``spans`` row of one received span of the trace keyed ``trace_pk``, in :data:`SPAN_COLUMNS`
    order (long texts packed: when ``compress`` by :func:`pack`, for SQLite, otherwise to ``bytea`` by
    :func:`pack_bytes`, for PostgreSQL)."""
    o = record.observation
    u = o.usage
    cost = o.cost
    model_call = o.kind.is_model_call or not u.is_empty
    attrs = o.attributes
    attributes = dumps(attrs) if attrs else None
    return (
        record.project_id,
        trace_pk,
        o.id,
        o.parent_id,
        o.kind.value,
        o.name,
        o.start_ns,
        o.end_ns,
        o.status.value,
        o.status_message,
        pack(o.input) if compress else pack_bytes(o.input),
        pack(o.output) if compress else pack_bytes(o.output),
        (pack(attributes) if attributes is not None else None) if compress else pack_bytes(attributes),
        o.provider,
        o.request_model,
        o.model,
        dumps(o.model_parameters),
        u.input if model_call else None,
        u.output if model_call else None,
        u.cache_read if model_call else None,
        u.cache_write if model_call else None,
        u.reasoning if model_call else None,
        None if cost is None else cost.total.usd,
        None if cost is None else cost_details(cost),
        None if cost is None else cost.price_version,
        o.ttft_ns,
        o.prompt_name,
        o.prompt_version,
        metered_key(record),
        None if cost is None else cost.saved.usd,
    )


def observation_from_row(row: Mapping[Any, Any], trace_id: str) -> Observation:
    """Inverse of :func:`span_row`, for a span of the trace ``trace_id``."""
    return Observation(
        trace_id=trace_id,
        id=row["span_id"],
        parent_id=row["parent_id"],
        kind=ObservationKind(row["kind"]),
        name=row["name"],
        start_ns=row["start_ns"],
        end_ns=row["end_ns"],
        status=Status(row["status"]),
        status_message=row["status_message"],
        input=unpack(row["input"]),
        output=unpack(row["output"]),
        attributes=loads(unpack(row["attributes"]), {}),
        provider=row["provider"],
        request_model=row["request_model"],
        model=row["model"],
        model_parameters=loads(row["model_parameters"], {}),
        usage=Usage(
            input=row["input_tokens"] or 0,
            output=row["output_tokens"] or 0,
            cache_read=row["cache_read_tokens"] or 0,
            cache_write=row["cache_write_tokens"] or 0,
            reasoning=row["reasoning_tokens"] or 0,
        ),
        cost=cost_from_columns(row["cost_details"], row["price_version"], row["saved_usd"]),
        ttft_ns=row["ttft_ns"],
        prompt_name=row["prompt_name"],
        prompt_version=row["prompt_version"],
    )


def trace_from_row(row: Mapping[Any, Any]) -> Trace:
    """A :class:`Trace` from a ``traces`` row. Token totals are kept as input/output sums."""
    return Trace(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        start_ns=row["start_ns"],
        end_ns=row["end_ns"],
        status=Status.ERROR if row["error_count"] else Status.OK,
        user_id=row["user_id"],
        session_id=row["session_id"],
        tags=tuple(loads(row["tags"], [])),
        metadata=loads(row["metadata"], {}),
        environment=row["environment"],
        release=row["release"],
        input=unpack(row["input"]),
        output=unpack(row["output"]),
        model=row["model"],
        observation_count=row["observation_count"],
        error_count=row["error_count"],
        usage=Usage(input=row["input_tokens"], output=row["output_tokens"]),
        cost_usd=None if row["unpriced_count"] and not row["cost_usd"] else Money.from_usd(row["cost_usd"]),
    )


def score_row(project_id: str, score: Score) -> dict[str, Any]:
    """The ``scores`` row of a score."""
    return {
        "id": score.id,
        "project_id": project_id,
        "trace_id": score.trace_id,
        "observation_id": score.observation_id,
        "name": score.name,
        "data_type": score.data_type.value,
        "value": score.value,
        "string_value": score.string_value,
        "source": score.source.value,
        "comment": score.comment,
        "created_ns": score.created_ns,
        "author": score.author,
    }


def score_from_row(row: Mapping[Any, Any]) -> Score:
    """Inverse of :func:`score_row`."""
    return Score(
        id=row["id"],
        trace_id=row["trace_id"],
        observation_id=row["observation_id"],
        name=row["name"],
        data_type=ScoreDataType(row["data_type"]),
        value=row["value"],
        string_value=row["string_value"],
        source=ScoreSource(row["source"]),
        comment=row["comment"],
        created_ns=row["created_ns"],
        author=row.get("author"),
    )


SPAN_COLUMNS = (
    "project_id", "trace_pk", "span_id", "parent_id", "kind", "name", "start_ns", "end_ns", "status",
    "status_message", "input", "output", "attributes", "provider", "request_model", "model",
    "model_parameters", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "cost_usd", "cost_details", "price_version", "ttft_ns", "prompt_name",
    "prompt_version", "key_id", "saved_usd",
)  # fmt: skip
TRACE_COLUMNS = (
    "project_id", "id", "name", "root_span_id", "user_id", "session_id", "tags", "metadata",
    "environment", "release", "input", "output", "model", "start_ns", "end_ns", "observation_count",
    "error_count", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "unpriced_count",
)  # fmt: skip


def trace_row(d: TraceDelta, compress: bool) -> tuple[Any, ...]:
    """The ``traces`` row a batch adds (merged into the stored one by the upsert), in
    :data:`TRACE_COLUMNS` order."""
    return (
        d.project_id,
        d.trace_id,
        d.name,
        d.root_span_id,
        d.user_id,
        d.session_id,
        dumps(d.tags),
        dumps(d.metadata),
        d.environment,
        d.release,
        pack(d.input) if compress else d.input,
        pack(d.output) if compress else d.output,
        d.model,
        d.start_ns,
        d.end_ns,
        d.observation_count,
        d.error_count,
        d.input_tokens,
        d.output_tokens,
        d.total_tokens,
        d.cost_usd.usd,
        d.unpriced_count,
    )


def pack_hist(counts: list[int], packed: bool) -> bytes | list[int]:
    """A histogram as stored: packed int64 (SQLite) or a list (PostgreSQL bigint[]), without its
    trailing empty buckets (merging pads the shorter side)."""
    end = len(counts)
    while end and not counts[end - 1]:
        end -= 1
    trimmed = counts[:end]
    return array("q", trimmed).tobytes() if packed else trimmed


_PG_INT8_ARRAY = struct.Struct("!iiIii")  # bigint[]'s binary header: 1 dimension, no NULLs, int8, size, 1


def pg_binary_hist(counts: list[int]) -> bytes:
    """:func:`pack_hist` for PostgreSQL's binary ``COPY``: the trimmed histogram as ``bigint[]`` in its
    binary form (``array_send``: the header, then each value's length, 8, and the value), made with
    numpy rather than psycopg's dumper, which reads the list value by value in Python."""
    import numpy as np

    end = len(counts)
    while end and not counts[end - 1]:
        end -= 1
    if not end:
        return _PG_EMPTY_ARRAY
    values = np.empty(end, dtype=_pg_int8_elements(np))
    values["length"] = 8
    values["value"] = counts[:end]
    return _PG_INT8_ARRAY.pack(1, 0, 20, end, 1) + values.tobytes()


_PG_EMPTY_ARRAY = struct.pack("!iiI", 0, 0, 20)  # no dimensions


@functools.cache
def _pg_int8_elements(np: Any) -> Any:
    return np.dtype([("length", ">i4"), ("value", ">i8")])


def unpack_hist(value: bytes | list[int] | None) -> list[int]:
    """Inverse of :func:`pack_hist`."""
    if type(value) is bytes:  # SQLite's packed form, the common case first
        counts = array("q")
        counts.frombytes(value)
        return counts.tolist()
    if value is None:
        return []
    if isinstance(value, bytearray | memoryview):
        return array("q", bytes(value)).tolist()
    return value if isinstance(value, list) else list(value)


def hist_add_packed(a: bytes | None, b: bytes | None) -> bytes:
    """``ph_hist_add`` for SQLite: the element-wise sum of two packed histograms."""
    return array("q", add_counts(unpack_hist(a), unpack_hist(b))).tobytes()


ROLLUP_COLUMNS = ("project_id", "bucket", "model", "name", *ROLLUP_SUMS, "latency_hist", "ttft_hist")
DIM_ROLLUP_COLUMNS = ("project_id", "bucket", "dimension", "value", *ROLLUP_SUMS, "latency_hist")


def rollup_row(
    project_id: str, bucket: int, model: str, name: str, r: RollupSums, packed: bool, binary: bool = False
) -> tuple[Any, ...]:
    """A rollup row by model (summed into the stored one by the upsert), in :data:`ROLLUP_COLUMNS`
    order; the TTFT sketch None when no call of the row was streamed. ``binary``: the histograms in
    PostgreSQL's binary form (:func:`pg_binary_hist`, for ``COPY``)."""
    hist: Any = pg_binary_hist if binary else functools.partial(pack_hist, packed=packed)
    ttft = hist(r.ttft_counts) if r.ttft_counts else None
    return (project_id, bucket, model, name, *r.stored(), hist(r.latency_counts), ttft)


def dim_rollup_row(
    project_id: str,
    bucket: int,
    dimension: str,
    value: str,
    r: RollupSums,
    packed: bool,
    binary: bool = False,
) -> tuple[Any, ...]:
    """A rollup row by dimension, in :data:`DIM_ROLLUP_COLUMNS` order (``binary``: as :func:`rollup_row`)."""
    hist = pg_binary_hist(r.latency_counts) if binary else pack_hist(r.latency_counts, packed)
    return (project_id, bucket, dimension, value, *r.stored(), hist)
