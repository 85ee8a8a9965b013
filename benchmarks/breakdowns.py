"""Exact breakdowns by end user, key, prompt version and tag (the dimension rollups, issue 23 item 1)
over a filled store.

    python benchmarks/breakdowns.py [--spans 1000000] [--keep PATH] [--database-url postgresql://...]

Fills the store as benchmarks/query.py does (500 end users over 30 days), then for each range of the
Overview and Costs pages times: the model rollups (sums and histograms, TTFT's included) and the exact
breakdowns (one grouped read of the dimension rollups per dimension, the top 20 with their latency
histograms), and the whole-range top traces. The rollups and breakdowns are timed as a page reads
them again (the histograms kept in process since the last read: pilothouse.store.rollup_cache) and
as a first read (none kept). Prints p50/p95 in ms and the load average. Target: every
exact breakdown p95 <= 200 ms. (The sampled estimate these replaced was removed with migration 0029; its
figures, measured beside the exact path, are in docs/performance.md.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from query import PROJECT, fill

from pilothouse.domain.queries import TraceQuery
from pilothouse.store.analytics import AnalyticsQueries
from pilothouse.store.breakdowns import dimension_groups
from pilothouse.store.sql import SqlStore
from pilothouse.ui import analytics as an

TARGET_MS = 200.0


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """p50 and p95 of ``fn``'s wall time in ms (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def bench_range(store: SqlStore, queries: AnalyticsQueries, win: an.Window, repeats: int) -> bool:
    """Time the paths over one range; True when an exact breakdown missed the target."""
    label = win.label
    failed = False

    def exact() -> dict[str, int]:
        out = {}
        for dimension in ("key", "prompt", "tag", "user"):
            groups, _ = dimension_groups(store, PROJECT, dimension, win.start_s, win.end_s)
            out = {g.value: g.sums.count for g in groups}
        return out

    def cold(fn: Callable[[], object]) -> Callable[[], object]:
        def first_read() -> object:
            store.histogram_cache.clear()
            return fn()

        return first_read

    def rollups() -> object:
        return queries.rollup_rows(PROJECT, win.start_s, win.end_s, win.bucket_s)

    for name, fn in (
        ("model rollups", rollups),
        ("model rollups, first read", cold(rollups)),
        ("exact rollups (4 breakdowns)", exact),
        ("exact rollups, first read", cold(exact)),
        ("top traces, whole range", lambda: queries.top_traces(PROJECT, win.start_ns, win.end_ns)),
    ):
        p50, p95 = timed(fn, repeats)
        print(f"{label:>5} {name:<34} {p50:8.1f} {p95:8.1f}", flush=True)
        if name.startswith("exact") and p95 > TARGET_MS:
            failed = True
    return failed


def main() -> None:
    """Fill (or reuse) a store and print the timings."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file (see --keep)")
    parser.add_argument("--keep", default=None, help="SQLite file to fill once and reuse")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    path = args.keep or os.path.join(tempfile.mkdtemp(), "breakdowns.db")
    url = args.database_url or f"sqlite:///{path}"
    store = SqlStore.from_url(url)
    now_ns = time.time_ns()
    if store.list_traces(PROJECT, TraceQuery(limit=1)).data:
        print(f"reusing {url}")
    else:
        print(f"filling {args.spans:,} spans into {url}")
        fill(store, args.spans, now_ns)
    queries = AnalyticsQueries(store)
    failed = False
    print(f"{'range':>5} {'path':<34} {'p50 ms':>8} {'p95 ms':>8}")
    for label in ("24h", "7d", "30d"):
        failed = bench_range(store, queries, an.window(label), args.repeats) or failed
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print(f"target p95 <= {TARGET_MS:.0f} ms for the exact breakdowns: {'MISSED' if failed else 'met'}")
    store.close()


if __name__ == "__main__":
    main()
