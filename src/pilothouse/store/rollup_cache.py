"""The model rollups' histograms per output bucket, kept in process between page views and checked
against the sums read fresh each time, so that a page reads from the database only the histograms of
the buckets that changed (on a 24-hour Overview: the last few minutes rather than ~5,000 minute rows).

A histogram is stored with the sums of its (range, model, name) as they were read just before it,
and only when its count of calls equals theirs (then no call was added in between: the sums only
grow). It is used again only while the sums read fresh are the same; a late span in a past bucket
changes them and its histograms are read again. So the cache is exact, whatever process writes the
spans (several workers, a separate ingest), and needs no invalidation message."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Hist = npt.NDArray[np.int64]

__all__ = ["RollupHistogramCache"]

# (project, table, first second, end second, model, name): the rollup rows a histogram adds up
Key = tuple[str, str, int, int, str, str]


class RollupHistogramCache:
    """Latency and TTFT histograms by :data:`Key`, each with the sums it was read with (a fingerprint).
    At most ``max_entries`` (about 2.3 KiB each with its TTFT histogram: ~23 MB at most; a project's
    four ranges with their breakdowns take ~2,500); the oldest go first."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[Key, tuple[tuple[Any, ...], Hist, Hist]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key, fingerprint: tuple[Any, ...]) -> tuple[Hist, Hist] | None:
        """The histograms stored under ``key`` if they were read with these sums, else None."""
        found = self._entries.get(key)
        if found is None or found[0] != fingerprint:
            return None
        return found[1], found[2]

    def put(self, key: Key, fingerprint: tuple[Any, ...], count: int, latency: Hist, ttft: Hist) -> bool:
        """Stores the histograms of ``key`` read after sums ``fingerprint`` of ``count`` calls, unless
        the latency histogram counts other calls (a call written between the two reads): then
        nothing is stored, and the next read reads it again. The arrays are kept read-only."""
        if int(latency.sum()) != count:
            return False
        latency = latency.copy()
        ttft = ttft.copy()
        latency.flags.writeable = False
        ttft.flags.writeable = False
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (fingerprint, latency, ttft)
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
