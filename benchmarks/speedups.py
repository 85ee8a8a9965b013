"""Accelerator benchmark: each C accelerator of pilothouse._speedups against its Python reference.

    python benchmarks/speedups.py [--spans 10000] [--batch 500] [--repeats 5]

In process, on the ingest benchmark's payload (benchmarks/ingest.py: OpenInference LLM spans with
1 KB of text, --batch to an export): for each accelerator, microseconds per span with it and with its
reference on the same inputs (the best of --repeats alternating rounds, the garbage collector paused
as the batch writer pauses it), their ratio, and a check that both gave the same result. Rows:
- check: ``_speedups.otlp_reader.check`` against ``tracing.otlp.parse_protobuf`` (upb), the step
  the collector runs on the request path;
- decode: ``otlp_reader.decode`` against ``iter_protobuf`` over upb's parsed request (the batch
  writer's step), and check + decode, the two together, what an export costs either way;
- sort attributes: ``_speedups.sort_attributes`` against ``tracing.conventions._sort_attributes``;
- normalise: ``conventions.normalise_span`` with the C attribute sorter and without it;
- search vector: ``_speedups.search_vector`` against ``store.search.document_vector`` on the spans'
  search documents (the same lexemes; PostgreSQL's batch writer's step).
Nothing to compare against where an accelerator was not built (``pilothouse._speedups.unavailable``
says why); the figures belong in docs/performance.md, with the date and the machine.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import build_bodies

from pilothouse import _speedups
from pilothouse.store import search
from pilothouse.tracing import conventions
from pilothouse.tracing.otlp import DEFAULT_LIMITS, RawEvent, RawSpan, iter_protobuf, parse_protobuf


def compare(
    name: str,
    accelerated: Callable[[], Any],
    reference: Callable[[], Any],
    per: int,
    repeats: int,
    key: Callable[[Any], Any] = repr,
) -> Any:
    """Prints microseconds per item (``per`` items in one call) of both, the best of ``repeats``
    rounds that alternate between them, and whether they gave the same result (by ``key``, after the
    timing); returns the accelerator's result."""
    best = [float("inf"), float("inf")]
    results: list[Any] = [None, None]
    for _ in range(repeats):
        for i, work in enumerate((accelerated, reference)):
            gc.collect()
            gc.disable()
            started = time.perf_counter()
            results[i] = work()
            best[i] = min(best[i], time.perf_counter() - started)
            gc.enable()
    c_us, reference_us = (b / per * 1e6 for b in best)
    same = key(results[0]) == key(results[1])
    verdict = "same result" if same else "DIFFERENT RESULTS"
    print(f"{name:<16} {c_us:>10.2f} {reference_us:>10.2f} {reference_us / c_us:>7.2f}x  {verdict}")
    if not same:
        raise SystemExit(f"{name}: the accelerator and its reference disagree")
    return results[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bodies = build_bodies(args.spans, args.batch)
    n = args.spans // args.batch * args.batch
    reader, sorter, vector = _speedups.otlp_reader, _speedups.sort_attributes, _speedups.search_vector
    if reader is None or sorter is None or vector is None:
        raise SystemExit(f"not built, nothing to compare: {_speedups.unavailable}")
    print(f"{n:,} spans in {len(bodies)} exports; microseconds per span, best of {args.repeats}")
    print(f"{'':<16} {'C':>10} {'reference':>10} {'ratio':>8}")

    limits = DEFAULT_LIMITS

    def c_check() -> list[Any]:
        return [reader.check(b) for b in bodies]

    def c_decode() -> list[RawSpan]:
        return [
            s
            for b in bodies
            for s in reader.decode(b, RawSpan, RawEvent, limits.span_attributes, limits.value_bytes)
        ]

    def upb_check() -> list[Any]:
        counts = [parse_protobuf(b)[1] for b in bodies]
        return [(c.accepted, c.rejected, c.values, c.reason) for c in counts]

    requests = [parse_protobuf(b)[0] for b in bodies]

    def upb_decode() -> list[RawSpan]:
        return [s for r in requests for s in iter_protobuf(r)]

    def upb_both() -> list[RawSpan]:
        return [s for b in bodies for s in iter_protobuf(parse_protobuf(b)[0])]

    compare("check", c_check, upb_check, n, args.repeats)
    compare("decode", c_decode, upb_decode, n, args.repeats)
    raws: list[RawSpan] = compare(
        "check + decode", lambda: (c_check(), c_decode())[1], upb_both, n, args.repeats
    )

    routes, route = conventions._ROUTES, conventions._route
    compare(
        "sort attributes",
        lambda: [sorter(r.attributes, routes, route) for r in raws],
        lambda: [conventions._sort_attributes(r.attributes) for r in raws],
        n,
        args.repeats,
    )

    def normalise(sort: Any) -> Callable[[], Any]:
        def work() -> Any:
            conventions._sort_native = sort
            try:
                return [conventions.normalise_span(r, "p") for r in raws]
            finally:
                conventions._sort_native = sorter

        return work

    records = compare("normalise", normalise(sorter), normalise(None), n, args.repeats)

    docs = [search.search_document(r) for r in records]
    limit = search.MAX_LEXEME_BYTES

    def lexemes(vectors: list[bytes]) -> list[list[bytes]]:  # the C's order is not the reference's
        return [sorted(v[4:].split(b"\0\0\0")) for v in vectors]

    compare(
        "search vector",
        lambda: [vector(d, limit) for d in docs],
        lambda: [search.document_vector(d, limit) for d in docs],
        n,
        args.repeats,
        key=lexemes,
    )


if __name__ == "__main__":
    main()
