"""Latency sketch: a fixed set of log-scale buckets whose counts add up across minutes, hours and
processes (so a rollup row can hold them as plain counter columns, summed by SQL).

Bucket 0 holds everything up to ``MIN_MS``; bucket ``i`` holds ``(MIN_MS * GAMMA**(i-1), MIN_MS *
GAMMA**i]``; the last bucket also holds everything above ``MAX_MS``. Reading a quantile back from the
counts is within ``(GAMMA - 1) / (GAMMA + 1)`` (about 7%) of the true value, as in DDSketch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BUCKETS = 100
MIN_MS = 1.0
MAX_MS = 1_200_000.0  # 20 minutes
GAMMA = (MAX_MS / MIN_MS) ** (1 / (BUCKETS - 1))
_LOG_GAMMA = math.log(GAMMA)
COLUMNS = tuple(f"lat_{i:02d}" for i in range(BUCKETS))


def latency_bucket(ms: float) -> int:
    """Index of the bucket holding ``ms`` milliseconds."""
    if ms <= MIN_MS:
        return 0
    return min(BUCKETS - 1, math.ceil(math.log(ms / MIN_MS) / _LOG_GAMMA))


def bucket_value(bucket: int) -> float:
    """Representative value of a bucket (its point of least relative error)."""
    if bucket <= 0:
        return MIN_MS
    return float(MIN_MS * 2 * GAMMA**bucket / (GAMMA + 1))


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The ``q``-quantile (0..1) of the values counted in ``counts`` (one count per bucket)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for bucket, n in enumerate(counts):
        seen += n
        if n and seen > rank:
            return bucket_value(bucket)
    return bucket_value(len(counts) - 1)
