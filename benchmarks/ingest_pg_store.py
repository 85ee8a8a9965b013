"""PostgreSQL's span write alone, the row-by-row INSERT against the binary COPY path, in one process:

    python benchmarks/ingest_pg_store.py [--spans 20000] [--batch 5000] [--repeats 5]
                                         [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

The benchmark's OpenInference spans are decoded and normalised once; then ``SqlStore.write_spans``
stores them in batches into a new database per run, the two paths alternating, timed by the wall clock
(PostgreSQL's own CPU included, which ``ingest.py`` cannot see). Prints spans/s per path, the ratio
pair by pair, and the load average (this machine is shared: compare within a run only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import build_bodies
from ingest_pg import _drop_database, _new_database

from pilothouse.domain.traces import SpanRecord
from pilothouse.store.sql import SqlStore
from pilothouse.tracing.conventions import normalise_span
from pilothouse.tracing.otlp import decode_protobuf


def records(spans: int) -> list[SpanRecord]:
    """The benchmark's spans as the collector hands them to the store."""
    return [
        normalise_span(raw, "default") for body in build_bodies(spans, 500) for raw in decode_protobuf(body)
    ]


def timed_write(admin_url: str, batch: list[SpanRecord], size: int, copy: bool) -> float:
    """Seconds to store ``batch`` in chunks of ``size`` into a new database."""
    url = _new_database(admin_url)
    store = SqlStore.from_url(url)
    try:
        store.copy_spans = copy
        started = time.perf_counter()
        for i in range(0, len(batch), size):
            store.write_spans(batch[i : i + size])
        return time.perf_counter() - started
    finally:
        store.close()
        _drop_database(admin_url, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000, help="spans per write (the server's chunk)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    batch = records(args.spans)
    load_before = os.getloadavg()
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for copy in (False, True):
            rates[copy].append(len(batch) / timed_write(args.database_url, batch, args.batch, copy))
    load_after = os.getloadavg()
    before, after = statistics.median(rates[False]), statistics.median(rates[True])
    print(
        f"{len(batch)} spans in writes of {args.batch}, median of {args.repeats} runs per path, alternating"
    )
    print(f"{'path':28} {'spans/s':>10}")
    print(f"{'INSERT per row (before)':28} {before:10,.0f}")
    print(f"{'binary COPY (after)':28} {after:10,.0f}")
    pairs = ", ".join(f"{b / a:.2f}" for a, b in zip(rates[False], rates[True], strict=True))
    print(f"COPY / INSERT: {after / before:.2f}x (pair by pair: {pairs})")
    print(
        f"cores: {os.cpu_count()}; load average before {', '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.2f}' for x in load_after)} (a machine shared with other work)"
    )


if __name__ == "__main__":
    main()
