"""Query benchmark: dashboard aggregate and filtered trace-list pages over 1,000,000 stored spans.

    python benchmarks/query.py [--spans 1000000] [--database-url postgresql://...] [--keep PATH]

Fills the store (root spans with one or two LLM calls each, spread over 30 days) through the same
batch writer the collector uses, then times API requests over HTTP: the dashboard (tokens, cost,
p50/p95 latency per hour over 30 days, by model) and filtered trace-list pages. Target: p95 <= 100 ms
each. Baseline, measured in the same run: the same dashboard computed by scanning the spans table
(what a store without rollups does).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))
from _common import MODELS, Server, create_key

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
from pilothouse.store.sql import SqlStore

DAY_NS = 86_400 * 10**9
PROJECT = "default"


def fill(store: SqlStore, n_spans: int, now_ns: int, already: int = 0) -> None:
    """``n_spans`` spans over the 30 days before ``now_ns``: traces of a root and one or two LLM calls, 500
    end users; half of the LLM calls were metered by the gateway under one of 20 virtual keys and name one
    of 5 prompts (3 versions each), so the key and prompt breakdowns have rows (drawn from a second
    random stream: the rest is what earlier fills made); a third of the calls were streamed (a time to
    first token) and a fifth saved on a cache (drawn from a third stream). ``already``: the spans the
    store holds, so that a top-up draws other traces than the first fill did (the same seeds would
    repeat its trace ids)."""
    seed = 11 if already == 0 else 1_000 + already
    rng = random.Random(seed)
    extra = random.Random(seed + 1)
    streams = random.Random(seed + 2)
    batch: list[SpanRecord] = []
    written = 0
    started = time.perf_counter()
    while written + len(batch) < n_spans:
        trace_id = rng.randbytes(16).hex()
        root_id = rng.randbytes(8).hex()
        start = now_ns - rng.randrange(30 * DAY_NS)
        user = f"user-{rng.randrange(500)}"
        attrs = TraceAttributes(user_id=user, session_id=f"s-{rng.randrange(20000)}", tags=("prod",))
        calls = rng.choice((1, 1, 2))
        total_ms = 0.0
        for _ in range(calls):
            ms = rng.lognormvariate(6.0, 0.7)
            model = rng.choice(MODELS)
            error = rng.random() < 0.02
            inp, out = rng.randrange(50, 2000), rng.randrange(10, 500)
            metered = extra.random() < 0.5
            key = f"key-{extra.randrange(20):02d}" if metered else None
            prompt = f"prompt-{extra.randrange(5)}" if metered else None
            version = str(extra.randrange(1, 4)) if metered else None
            ttft_ns = int(ms * streams.uniform(0.1, 0.5) * 1e6) if streams.random() < 1 / 3 else None
            saved = Money(inp * 5 * 10**5) if streams.random() < 0.2 else Money.ZERO
            batch.append(
                SpanRecord(
                    PROJECT,
                    Observation(
                        trace_id=trace_id,
                        id=rng.randbytes(8).hex(),
                        parent_id=root_id,
                        name="chat",
                        kind=ObservationKind.GENERATION,
                        start_ns=start + int(total_ms * 1e6),
                        end_ns=start + int((total_ms + ms) * 1e6),
                        status=Status.ERROR if error else Status.OK,
                        model=model,
                        usage=Usage(input=inp, output=out),
                        cost=Cost(
                            {"input": Money(inp * 10**6), "output": Money(out * 4 * 10**6)}, "bench", saved
                        ),
                        ttft_ns=ttft_ns,
                        input=f"question {rng.randrange(10**6)} about {model}",
                        output=f"answer {rng.randrange(10**6)}",
                        attributes={"gateway.key_id": key} if key else {},
                        prompt_name=prompt,
                        prompt_version=version,
                    ),
                    attrs,
                    metered=metered,
                )
            )
            total_ms += ms
        batch.append(
            SpanRecord(
                PROJECT,
                Observation(
                    trace_id=trace_id,
                    id=root_id,
                    name=rng.choice(("rag-answer", "support-bot", "summarise")),
                    start_ns=start,
                    end_ns=start + int((total_ms + 5) * 1e6),
                    input=f"user asks {rng.randrange(10**6)}",
                    output="done",
                ),
                attrs,
            )
        )
        if len(batch) >= 5000:
            store.write_spans(batch)
            written += len(batch)
            batch = []
            if written % 100_000 < 5000:
                rate = written / (time.perf_counter() - started)
                print(f"  filled {written:,} spans ({rate:,.0f}/s)", flush=True)
    store.write_spans(batch)


def timed(http: httpx.Client, path: str, params: dict[str, str], repeats: int) -> list[float]:
    http.get(path, params=params).raise_for_status()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = http.get(path, params=params)
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def scan_dashboard(store: SqlStore, start_ns: int) -> None:
    """The baseline: the same per-hour, per-model figures straight from the spans table."""
    hour = "(start_ns / 3600000000000)"
    sql = (
        f"SELECT {hour} AS h, model, count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd), "
        "avg(end_ns - start_ns) FROM spans WHERE project_id = :p AND start_ns >= :s AND model IS NOT NULL "
        "GROUP BY h, model"
    )
    with store.engine.connect() as conn:
        conn.execute(text(sql), {"p": PROJECT, "s": start_ns}).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file (see --keep)")
    parser.add_argument("--keep", default=None, help="SQLite file to reuse (filled once)")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    if args.database_url:
        url = args.database_url
    else:
        path = args.keep or os.path.join(tempfile.mkdtemp(prefix="ph-bench-query-"), "query.db")
        url = f"sqlite:///{path}"
    store = SqlStore.from_url(url)
    now_ns = time.time_ns()
    have = store.count_spans(PROJECT)
    if have < args.spans:
        print(f"filling {args.spans - have:,} spans into {url.split('@')[-1]} ...", flush=True)
        t0 = time.perf_counter()
        fill(store, args.spans - have, now_ns, have)
        print(f"filled in {time.perf_counter() - t0:.0f} s", flush=True)
    if store.dialect == "postgresql":
        # What autovacuum does soon after a bulk load; without statistics the planner guesses badly.
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    total = store.count_spans(PROJECT)
    key = create_key(url)
    server = Server(url)
    try:
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as http:
            cases = {
                "dashboard 30d by hour x model": (
                    "/api/metrics/models",
                    {"from": "30d", "granularity": "hour"},
                ),
                "traces: newest page": ("/api/traces", {"limit": "50"}),
                "traces: model + 7d": ("/api/traces", {"model": "gpt-4o", "from": "7d", "limit": "50"}),
                "traces: errors": ("/api/traces", {"status": "error", "limit": "50"}),
                "traces: one user": ("/api/traces", {"user_id": "user-17", "limit": "50"}),
                "traces: text search": ("/api/traces", {"q": "about gpt-4o-mini", "limit": "50"}),
                "traces: name + min latency": (
                    "/api/traces",
                    {"name": "summarise", "min_latency_ms": "1000", "limit": "50"},
                ),
            }
            results = {
                label: timed(http, path, params, args.repeats) for label, (path, params) in cases.items()
            }
        scan = []
        for _ in range(max(3, args.repeats // 10)):
            t0 = time.perf_counter()
            scan_dashboard(store, now_ns - 30 * DAY_NS)
            scan.append((time.perf_counter() - t0) * 1000)
    finally:
        server.stop()
        store.close()
    print(f"\n{total:,} spans stored, database {url.split('@')[-1]}")
    print(f"{'query (over HTTP)':32} {'p50 ms':>8} {'p95 ms':>8} {'target':>8}")
    for label, times in results.items():
        print(f"{label:32} {statistics.median(times):8.1f} {p95(times):8.1f} {'<= 100':>8}")
    dash = p95(results["dashboard 30d by hour x model"])
    print(
        f"\nbaseline: same dashboard by scanning spans: p50 {statistics.median(scan):.0f} ms "
        f"-> rollups are {statistics.median(scan) / dash:.0f}x faster (p95 vs scan p50)"
    )


if __name__ == "__main__":
    main()
