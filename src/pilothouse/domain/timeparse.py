"""Reading times people type: ISO 8601, Unix seconds, or a duration back from now (``15m``, ``7d``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``2h``, ``7d``, ``1w``; raises ValueError otherwise."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 15m, 2h or 7d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_time_ns(text: str, now_ns: int) -> int:
    """A point in time as nanoseconds: ISO 8601, Unix seconds, or a duration before ``now_ns``."""
    text = text.strip()
    if _DURATION.match(text.lower()):
        return now_ns - int(parse_duration_s(text) * 1e9)
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601, Unix seconds or a duration like 24h"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9)


def iso(ns: int) -> str:
    """ISO 8601 text (UTC, milliseconds) of a time in nanoseconds."""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
