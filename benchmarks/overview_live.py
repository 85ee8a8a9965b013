"""The Overview's rollup reads while spans come in: another process writes model calls now (5 traces
every 0.1 s, ~50 calls a second) into the store while this one reads a range's model rollups and its
three breakdowns (key, user, prompt) every 0.5 s, as repeated page views would. With spans arriving,
the histograms kept in process (pilothouse.store.rollup_cache) are read again for the buckets that
take the new calls; this shows what that costs.

    python benchmarks/overview_live.py --database-url URL [--reads 10]

It WRITES spans into the store given (project "default"): point it at a copy of a benchmark store
(``CREATE DATABASE copy TEMPLATE original`` on PostgreSQL, a copied file on SQLite), not at one others
measure. Prints median and max ms per range and the load average.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing.synchronize import Event

from pilothouse.domain.money import Money
from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)
from pilothouse.store.analytics import AnalyticsQueries
from pilothouse.store.breakdowns import dimension_breakdowns
from pilothouse.store.sql import SqlStore
from pilothouse.ui import analytics as an

PROJECT = "default"


def write_now(url: str, stop: Event) -> None:
    """Five traces of a model call each, every 0.1 s, stamped now, until ``stop``."""
    store = SqlStore.from_url(url)
    i = 0
    while not stop.is_set():
        batch = []
        for _ in range(5):
            i += 1
            now = time.time_ns()
            trace_id = f"{i + 7 * 10**9:032x}"
            root = Observation(trace_id, f"{i:016x}", "agent", now, now + 2 * 10**8)
            call = Observation(
                trace_id,
                f"{i + 10**8:016x}",
                "chat",
                now,
                now + 10**8 + i % 50 * 10**6,
                kind=ObservationKind.GENERATION,
                parent_id=root.id,
                status=Status.OK,
                model="gpt-4o-mini",
                usage=Usage(input=100, output=20),
                cost=Cost({"input": Money.from_usd("0.0001")}, "v1"),
                attributes={"gateway.key_id": "key-03"},
            )
            attrs = TraceAttributes(user_id=f"user-{i % 500}")
            batch += [SpanRecord(PROJECT, root, attrs), SpanRecord(PROJECT, call, attrs, metered=True)]
        store.write_spans(batch)
        time.sleep(0.1)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a store this may write into")
    parser.add_argument("--reads", type=int, default=10)
    args = parser.parse_args()
    stop = mp.Event()
    writer = mp.Process(target=write_now, args=(args.database_url, stop))
    writer.start()
    store = SqlStore.from_url(args.database_url)
    queries = AnalyticsQueries(store)
    try:
        time.sleep(2)
        for label in ("24h", "30d"):
            win = an.window(label)

            def rollups(win: an.Window = win) -> object:
                return queries.rollup_rows(PROJECT, win.start_s, win.end_s, win.bucket_s)

            def breakdowns(win: an.Window = win) -> object:
                return dimension_breakdowns(store, PROJECT, ("key", "user", "prompt"), win.start_s, win.end_s)

            rollups(), breakdowns()  # the first read of the range
            times: dict[str, list[float]] = {"model rollups": [], "breakdowns": []}
            for _ in range(args.reads):
                time.sleep(0.5)
                for name, fn in (("model rollups", rollups), ("breakdowns", breakdowns)):
                    started = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - started) * 1000)
            for name, ms in times.items():
                print(f"{label:>4} {name:<14} median {statistics.median(ms):6.1f}  max {max(ms):6.1f} ms")
    finally:
        stop.set()
        writer.join()
        store.close()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
