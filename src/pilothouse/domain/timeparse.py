"""Reading times people type: ISO 8601, Unix seconds, or a duration back from now (``15m``, ``7d``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Times a query may name: from the Unix epoch to 2200-01-01, so that nanoseconds (and sums of them)
# stay well inside a signed 64-bit integer, which is what both databases store.
EARLIEST_NS = 0
LATEST_NS = 7_258_118_400 * 10**9


def parse_duration_s(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``2h``, ``7d``, ``1w``; raises ValueError otherwise."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 15m, 2h or 7d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_time_ns(text: str, now_ns: int) -> int:
    """A point in time as nanoseconds: ISO 8601, Unix seconds, or a duration before ``now_ns``. Raises
    ValueError for anything else, and for a time before 1970 or after 2199 (``inf``, ``1e300``,
    ``0001-01-01``), which no stored trace can have."""
    text = text.strip()
    try:
        if _DURATION.match(text.lower()):
            ns = now_ns - round(parse_duration_s(text) * 1e9)
        else:
            ns = _absolute_ns(text)
    except OverflowError:
        ns = LATEST_NS + 1
    if not EARLIEST_NS <= ns <= LATEST_NS:
        raise ValueError(f"{text[:64]!r} is out of range: a time must be between 1970 and 2199")
    return ns


def _absolute_ns(text: str) -> int:
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds != seconds:  # NaN
            raise ValueError(f"{text!r} is not a time: use ISO 8601, Unix seconds or a duration like 24h")
        return round(seconds * 1e9)  # OverflowError for infinities
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text[:64]!r} is not a time: use ISO 8601, Unix seconds or a duration like 24h"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return int(moment.timestamp() * 1e9)
    except (OverflowError, ValueError, OSError):  # 0001-01-01 or 9999-12-31 at some offsets
        raise OverflowError from None


def iso(ns: int) -> str:
    """ISO 8601 text (UTC, milliseconds) of a time in nanoseconds."""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
