"""Full-text search benchmark (issue 23, item 6): the trace list's text search over N stored spans
through the index, against the scan it replaced, and what the index costs at ingest.

    python benchmarks/search.py [--spans 1000000] [--database-url postgresql://...] [--keep PATH]
                                [--repeats 30] [--ingest-spans 100000]

1. Ingest: the same spans written through the batch writer (``SqlStore.write_spans``, 5,000 a batch)
   into two new stores, with the search index and without it (SQLite: ``index_search = False``;
   PostgreSQL: the trigger disabled), alternating, in this run: spans/s and the index's share.
2. Search: fills the store as benchmarks/query.py does (reuses ``--keep``), then times
   ``store.list_traces`` (the code of ``GET /api/traces?q=`` and the ``/traces`` page) for a word that
   occurs nowhere, a word on every trace (first page), a word in ~1 trace of 10,000 and a prefix, p50 and
   p95. Targets: no match <= 300 ms p95; a word that occurs, first page <= 200 ms p95. Baseline, same run:
   the case-insensitive scan the search was before (LIKE over every text of every candidate trace,
   newest first, until a page is full), fewer repeats (it takes seconds per query at 1M spans).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, literal, or_, select, text

sys.path.insert(0, str(Path(__file__).parent))
from query import PROJECT, fill

from pilothouse.domain.queries import TraceQuery
from pilothouse.store import tables as t
from pilothouse.store.sql import SqlStore

NO_MATCH_MS, FIRST_PAGE_MS = 300.0, 200.0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def old_scan(store: SqlStore, search: str, since: int | None, limit: int = 50) -> list[str]:
    """The search before the index: a LIKE probe of each candidate trace's texts, newest first."""
    c, s = t.traces.c, t.spans.c
    in_trace = and_(
        s.trace_pk == c.pk, or_(store._contains(s.input, search), store._contains(s.output, search))
    )
    probe = select(literal(1)).where(in_trace).limit(1).scalar_subquery()
    cond: ColumnElement[bool] = or_(
        store._contains(c.input, search), store._contains(c.output, search), probe.is_not(None)
    )
    stmt = (
        select(c.id)
        .where(c.project_id == PROJECT, c.start_ns >= (since or 0), cond)
        .order_by(c.start_ns.desc(), c.pk.desc())
        .limit(limit + 1)
    )
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(stmt)]


def timed(fn: Any, repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def ingest_cost(url_of: Any, spans: int, rounds: int) -> None:
    """Spans/s of the batch writer with and without the index, alternating, each on a new store."""
    from query import fill as fill_store

    rates: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(rounds):
        for indexed in (False, True) if round_ % 2 == 0 else (True, False):
            store = SqlStore.from_url(url_of(f"ingest-{round_}-{indexed}"))
            store.index_search = indexed
            if store.dialect == "postgresql":
                with store.engine.begin() as conn:
                    conn.execute(
                        text(f"ALTER TABLE spans {'ENABLE' if indexed else 'DISABLE'} TRIGGER spans_search")
                    )
                    conn.execute(
                        text(f"ALTER TABLE traces {'ENABLE' if indexed else 'DISABLE'} TRIGGER traces_search")
                    )
            started = time.perf_counter()
            fill_store(store, spans, time.time_ns())
            rates[indexed].append(spans / (time.perf_counter() - started))
            if store.dialect == "postgresql":
                with store.engine.begin() as conn:
                    conn.execute(text("ALTER TABLE spans ENABLE TRIGGER spans_search"))
                    conn.execute(text("ALTER TABLE traces ENABLE TRIGGER traces_search"))
            store.close()
    without, with_ = statistics.median(rates[False]), statistics.median(rates[True])
    slower = 100 * (without - with_) / without
    print(f"ingest (batch writer, {spans:,} spans, median of {rounds}):")
    print(f"  without the index {without:,.0f} spans/s,")
    print(f"  with it {with_:,.0f} spans/s ({slower:+.1f}% slower); load average {loadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file (see --keep)")
    parser.add_argument("--keep", default=None, help="SQLite file to fill once and reuse")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    parser.add_argument("--ingest-spans", type=int, default=100_000, help="0: skip the ingest comparison")
    parser.add_argument("--ingest-rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"load average before: {loadavg()}")
    folder = Path(tempfile.mkdtemp(prefix="ph-search-"))
    if args.ingest_spans:
        if args.database_url:
            print("ingest comparison: PostgreSQL (the store's tables are emptied between rounds)")

            def pg_url(_: str) -> str:
                store = SqlStore.from_url(args.database_url)
                with store.engine.begin() as conn:
                    rollups = "rollup_minute, rollup_hour, rollup_dim_minute, rollup_dim_hour, rollup_dim_day"
                    conn.execute(text(f"TRUNCATE spans, traces, {rollups}"))
                store.close()
                return str(args.database_url)

            ingest_cost(pg_url, args.ingest_spans, args.ingest_rounds)
        else:
            ingest_cost(lambda name: f"sqlite:///{folder / name}.db", args.ingest_spans, args.ingest_rounds)
    url = args.database_url or f"sqlite:///{args.keep or folder / 'search.db'}"
    store = SqlStore.from_url(url)
    stored = store.count_spans(PROJECT)
    if stored < args.spans:
        print(f"filling {args.spans - stored:,} spans ...")
        fill(store, args.spans - stored, time.time_ns())
    spans = store.count_spans(PROJECT)
    print(f"{store.dialect}: {spans:,} spans stored; load average {loadavg()}")
    now = time.time_ns()
    cases = [
        ("word that occurs nowhere", "xylophone", NO_MATCH_MS),
        ("word on every trace, first page", "question", FIRST_PAGE_MS),
        ("rare word (a number), first page", "123456", FIRST_PAGE_MS),
        ("prefix, first page", "answ*", FIRST_PAGE_MS),
        ("two words, last 7 days", "question gpt", FIRST_PAGE_MS),
    ]
    head = f"{'case':38} {'index p50':>10} {'p95':>8} {'target':>7} {'rows':>5}"
    print(f"{head} | {'old scan p50':>12} {'p95':>8}")
    for label, word, target in cases:
        since = now - 7 * 86400 * 10**9 if "7 days" in label else None
        query = TraceQuery(search=word, limit=50, start_ns=since)
        times, page = timed(lambda q=query: store.list_traces(PROJECT, q), args.repeats)
        plain = word.rstrip("*")
        base, old = timed(lambda w=plain, s=since: old_scan(store, w, s), args.baseline_repeats)
        verdict = "ok" if _p(times, 0.95) <= target else "MISSED"
        new = f"{statistics.median(times):8.1f}ms {_p(times, 0.95):6.1f}ms {target:5.0f}ms"
        new += f" {len(page.data):5}"
        scan = f"{statistics.median(base):10.1f}ms {_p(base, 0.95):6.1f}ms"
        print(f"{label:38} {new} | {scan}  {verdict} (old scan rows {min(len(old), 50)})")
    print(f"load average after: {loadavg()}")
    store.close()
    if not args.keep and not args.database_url:
        for name in os.listdir(folder):
            os.unlink(folder / name)
        os.rmdir(folder)


if __name__ == "__main__":
    main()
