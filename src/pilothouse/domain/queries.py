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
    """A filter or cursor that cannot be read; the message says which and why."""


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
    cursor: tuple[int, str] | None = None  # (start_ns, trace id) of the last row of the previous page

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise InvalidQuery(f"limit must be between 1 and {MAX_PAGE_SIZE}")


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
