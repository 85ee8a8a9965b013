"""Latency sketch: log-scale buckets whose counts add up across minutes, hours and processes.

A value ``v`` (milliseconds) falls in bucket ``ceil(log(v) / log(GAMMA))``; any quantile read back from
the counts is within ``(GAMMA - 1) / (GAMMA + 1)`` (about 4.8%) of the true value, as in DDSketch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

GAMMA = 1.1
_LOG_GAMMA = math.log(GAMMA)
MIN_MS = 0.01  # values below this share one bucket
MIN_BUCKET = math.ceil(math.log(MIN_MS) / _LOG_GAMMA)


def latency_bucket(ms: float) -> int:
    """Index of the bucket holding ``ms`` milliseconds."""
    if ms <= MIN_MS:
        return MIN_BUCKET
    return math.ceil(math.log(ms) / _LOG_GAMMA)


def bucket_value(bucket: int) -> float:
    """Representative value of a bucket (its point of least relative error)."""
    if bucket <= MIN_BUCKET:
        return MIN_MS
    return 2 * GAMMA**bucket / (GAMMA + 1)


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The ``q``-quantile (0..1) of the values counted in ``counts`` (bucket -> count), or None if empty."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen > rank:
            return bucket_value(bucket)
    return bucket_value(max(counts))
