"""PostgreSQL ingest, step by step: the CPU each step of a span's way from an OTLP export to its
``COPY`` row costs in a server worker, in microseconds per span.

    python benchmarks/ingest_steps.py [--spans 10000] [--repeats 5]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

In process, on the ingest benchmark's payload (``benchmarks/ingest.py``'s OpenInference LLM spans in
exports of 500), the garbage collector paused as the batch writer pauses it; each step the best of
--repeats rounds, by this process's CPU time:

- check: ``check_protobuf`` (the request path); decode: the checked export's spans (``iter_checked``);
- normalise: ``normalise_span`` and ``count_calls_once``; prepare: names capped, NULs replaced, priced;
- deltas: the batch's trace summaries and rollups (``batch_deltas``); trace rows;
- span rows (``span_row``: its texts packed by ``pack_bytes``), of which: pack (``pack_bytes`` of
  input, output and attributes) and attributes JSON;
- search vector (``pg_span_vector``);
- COPY encoding: psycopg formatting the rows (span rows with their vectors) for a binary ``COPY``;
- store write: ``SqlStore.write_spans`` of 5,000 new spans (other traces each round) into a new
  database (this process's CPU only, PostgreSQL's not counted), which holds the steps from deltas to
  COPY and the statements' round trips.

Run it with ``PYTHONPATH`` at another checkout's ``src`` (e.g. main's) to compare, alternating.

The figures belong in docs/performance.md with the date and the load average.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import build_bodies
from ingest_pg import _drop_database, _new_database

from pilothouse.costs.catalogue import PriceCatalogue
from pilothouse.costs.pricing import Pricer
from pilothouse.domain.duplicates import count_calls_once
from pilothouse.domain.rollups import batch_deltas
from pilothouse.domain.traces import cap_names, replace_nul_characters
from pilothouse.gateway.config import load_gateway_config
from pilothouse.store.rows import dumps, pack_bytes, span_row, trace_row
from pilothouse.store.search import pg_span_vector
from pilothouse.store.sql import SqlStore
from pilothouse.tracing.conventions import normalise_span
from pilothouse.tracing.otlp import DEFAULT_LIMITS, check_protobuf, iter_checked


def best(work: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The least CPU seconds of ``repeats`` calls of ``work``, and its last result."""
    least, result = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        started = time.process_time()
        result = work()
        least = min(least, time.process_time() - started)
        gc.enable()
    return least, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    bodies = build_bodies(args.spans, 500)
    n = len(bodies) * 500
    pricer = Pricer(PriceCatalogue.packaged(load_gateway_config(None).prices))
    steps: list[tuple[str, float]] = []

    def step(name: str, work: Callable[[], Any]) -> Any:
        seconds, result = best(work, args.repeats)
        steps.append((name, seconds * 1e6 / n))
        return result

    checked = step("check (request path)", lambda: [check_protobuf(b, DEFAULT_LIMITS) for b in bodies])
    raws = step("decode", lambda: [list(iter_checked(c)) for c in checked])

    def normalise() -> list[Any]:
        out = []
        for export in raws:
            records = [normalise_span(raw, "default") for raw in export]
            count_calls_once(records)
            out.extend(records)
        return out

    records = step("normalise", normalise)

    def prepare() -> None:
        for r in records:
            cap_names(r.observation)
            replace_nul_characters(r)
            pricer.price_observation(r.observation)

    step("prepare (caps, NULs, price)", prepare)
    deltas = step("batch deltas (rollups)", lambda: batch_deltas(records))
    step("trace rows", lambda: [trace_row(d, False) for d in deltas.traces.values()])
    rows = step("span rows (with packing)", lambda: [span_row(r, 1, False) for r in records])

    def pack() -> None:
        for r in records:
            o = r.observation
            pack_bytes(o.input)
            pack_bytes(o.output)
            pack_bytes(dumps(o.attributes) if o.attributes else None)

    step("  of which: pack texts", pack)
    step("  of which: attributes JSON", lambda: [dumps(r.observation.attributes) for r in records])
    vectors = step("search vector", lambda: [pg_span_vector(r) for r in records])
    full = [(*row, v) for row, v in zip(rows, vectors, strict=True)]

    url = _new_database(args.database_url)
    store = SqlStore.from_url(url)
    try:
        store.write_spans(records[:500])  # migrated, statements prepared, staging tables made
        import psycopg

        copier = store._span_copier  # the span rows' COPY, as the writer runs it

        def encode() -> None:
            with psycopg.connect(url) as conn, conn.cursor() as cursor:
                cursor.execute(copier._create)
                types = copier._column_types(cursor)
                for dumper in copier._dumpers:
                    cursor.adapters.register_dumper(None, dumper)
                started = time.process_time()
                with cursor.copy(copier._copy) as copy:
                    copy.set_types(types)
                    for row in full:
                        copy.write_row(row)
                encode.seconds = time.process_time() - started  # type: ignore[attr-defined]
                conn.rollback()

        least = float("inf")
        for _ in range(args.repeats):
            gc.disable()
            encode()
            gc.enable()
            least = min(least, encode.seconds)  # type: ignore[attr-defined]
        steps.append(("COPY rows (psycopg, incl. send)", least * 1e6 / n))
        least = float("inf")
        for seed in range(args.repeats):  # other traces each time: every span is new
            batch = [
                normalise_span(raw, "default")
                for body in build_bodies(5000, 500, seed=100 + seed)
                for raw in iter_checked(check_protobuf(body, DEFAULT_LIMITS))
            ]
            gc.collect()
            gc.disable()
            started = time.process_time()
            store.write_spans(batch)
            least = min(least, time.process_time() - started)
            gc.enable()
        steps.append(("store write of 5,000 (deltas..COPY)", least * 1e6 / 5000))
    finally:
        store.close()
        _drop_database(args.database_url, url)

    print(f"{n:,} spans in exports of 500; CPU us per span, best of {args.repeats}")
    for name, us in steps:
        print(f"{name:36} {us:8.1f}")
    print(f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
