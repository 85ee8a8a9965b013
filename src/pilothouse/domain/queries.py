"""Queries over stored traces: filters, keyset cursors and pages. Pure; the store turns them into SQL."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pilothouse.domain.money import Money
from pilothouse.domain.rollups import RollupSums
from pilothouse.domain.traces import Observation, Score, Status, Trace

T = TypeVar("T")

MAX_PAGE_SIZE = 500


class InvalidQuery(ValueError):
    """A filter or cursor that cannot be read; the message says which and why, ``param`` (when known)
    the query parameter at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """Filters of the trace list. Times in nanoseconds; ``None`` means no filter."""

    start_ns: int | None = None
    end_ns: int | None = None
    name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    model: str | None = None
    tags: tuple[str, ...] = ()
    status: Status | None = None
    min_latency_ms: float | None = None
    min_cost_usd: Money | None = None
    max_latency_ms: float | None = None
    max_cost_usd: Money | None = None
    environment: str | None = None
    release: str | None = None
    search: str | None = None
    limit: int = 50
    # (start_ns, trace id) of the last row of the previous page; sorted by another column, that
    # column's value comes first: (value, start_ns, trace id)
    cursor: tuple[int, str] | tuple[float, int, str] | None = None
    key_id: str | None = None  # a gateway call of the trace went through this virtual key
    metadata: tuple[tuple[str, str], ...] = ()  # (key, value): the trace's metadata has each
    score_name: str | None = None  # a score of this name (numeric or boolean: in the value range)
    min_score: float | None = None
    max_score: float | None = None
    sort: str = "time"  # one of SORT_KEYS
    descending: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise InvalidQuery(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        if self.sort not in SORT_KEYS:
            raise InvalidQuery(f"sort must be one of {', '.join(SORT_KEYS)}")
        if (self.min_score is not None or self.max_score is not None) and self.score_name is None:
            raise InvalidQuery("a score range needs the score's name (score)")
        for low, high in (
            ("min_latency_ms", "max_latency_ms"),
            ("min_cost_usd", "max_cost_usd"),
            ("min_score", "max_score"),
        ):
            least, most = getattr(self, low), getattr(self, high)
            if least is not None and most is not None and least > most:
                raise InvalidQuery(f"{low} ({least}) is above {high} ({most}): no trace can match", low)
        if len(self.metadata) > MAX_METADATA_FILTERS or len(self.tags) > MAX_TAG_FILTERS:
            raise InvalidQuery(f"at most {MAX_METADATA_FILTERS} metadata filters and {MAX_TAG_FILTERS} tags")


SORT_KEYS = ("time", "latency", "cost", "tokens")
MAX_METADATA_FILTERS = 10
MAX_TAG_FILTERS = 20


def encode_sort_cursor(sort: str, value: float, start_ns: int, item_id: str) -> str:
    """Opaque cursor text for a row of a list sorted by another column than time. It names its sort,
    so that a cursor of one sort is refused by another (a latency read as a cost, or as a time, would
    silently skip or repeat rows)."""
    return base64.urlsafe_b64encode(f"{sort}:{value!r}:{start_ns}:{item_id}".encode()).decode().rstrip("=")


def decode_sort_cursor(cursor: str, sort: str) -> tuple[float, int, str]:
    """Inverse of :func:`encode_sort_cursor` for a list sorted by ``sort``; raises
    :class:`InvalidQuery` on anything else (a cursor of another sort included)."""
    try:
        if len(cursor) > 512:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        sort_text, value_text, start, item_id = raw.split(":", 3)
        if sort_text != sort:
            raise InvalidQuery(f"cursor is of a list sorted by {sort_text or 'time'}, not by {sort}")
        value, position = float(value_text), int(start)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not finite")
        if not -(2**63) <= position < 2**63 or not item_id.isprintable():
            raise ValueError("out of range")
        return value, position, item_id
    except InvalidQuery:
        raise
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidQuery("cursor is not one this server gave out") from exc


def encode_cursor(start_ns: int, item_id: str) -> str:
    """Opaque cursor text for the row (start_ns, id)."""
    return base64.urlsafe_b64encode(f"{start_ns}:{item_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Inverse of :func:`encode_cursor`; raises :class:`InvalidQuery` on anything else (a time outside
    a signed 64-bit integer, or an id with control characters, is no cursor this server gave out)."""
    try:
        if len(cursor) > 512:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        start, item_id = raw.split(":", 1)
        position = int(start)
        if not -(2**63) <= position < 2**63 or not item_id.isprintable():
            raise ValueError("out of range")
        return position, item_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidQuery("cursor is not one this server gave out") from exc


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results and the cursor of the next page (None on the last)."""

    data: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """A row of the trace list: the trace and a preview of its input and output."""

    trace: Trace
    input_preview: str | None = None
    output_preview: str | None = None


@dataclass(frozen=True, slots=True)
class TraceDetail:
    """A trace with all its observations (in start order) and scores."""

    trace: Trace
    observations: list[Observation]
    scores: list[Score] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Activity:
    """Usage of one session or end user in a time range."""

    id: str
    traces: int
    first_ns: int
    last_ns: int  # start of its newest trace
    total_tokens: int
    cost_usd: Money
    errors: int
    user_ids: tuple[str, ...] = ()
    end_ns: int = 0  # end of its last trace


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A conversation: the traces that share a session id."""

    session_id: str
    trace_count: int
    start_ns: int
    end_ns: int
    user_ids: tuple[str, ...]
    total_tokens: int
    cost_usd: Money


@dataclass(slots=True)  # not frozen: a dashboard makes thousands, and frozen ones are slower to make
class ModelMetrics:
    """Model calls of one model in one time bucket (from the rollups): their sums and latency
    percentiles."""

    bucket_start_s: int
    model: str
    sums: RollupSums
    latency_ms_p50: float | None
    latency_ms_p95: float | None


def next_page(query: TraceQuery, cursor: str) -> TraceQuery:
    """``query`` for the page after the one whose next cursor is ``cursor`` (read for its sort)."""
    position: tuple[int, str] | tuple[float, int, str] = (
        decode_cursor(cursor) if query.sort == "time" else decode_sort_cursor(cursor, query.sort)
    )
    return TraceQuery(
        **{**{f: getattr(query, f) for f in TraceQuery.__dataclass_fields__}, "cursor": position}
    )
