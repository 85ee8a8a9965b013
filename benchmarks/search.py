"""Full-text search benchmark (issue 23, item 6): the trace list's text search over N stored spans,
this code against a baseline commit (main) in the same run, and what the index costs at ingest.

    python benchmarks/search.py [--spans 1000000] [--database-url postgresql://...] [--keep PATH]
                                [--repeats 20] [--baseline-ref main] [--baseline-repeats 5]
                                [--rounds 2] [--ingest-spans 100000] [--ingest-database-url URL]
                                [--baseline-keep PATH] [--ingest-baseline]

1. Ingest (``--ingest-spans``, 0 to skip): the same spans written through the batch writer
   (``SqlStore.write_spans``, 5,000 a batch) with the search index and without it (SQLite:
   ``index_search = False``; PostgreSQL: no span text for the vector, the traces' trigger disabled and
   both GIN indexes dropped), alternating, on emptied stores, in this run: spans/s and the index's share.
   SQLite with ``--ingest-baseline``: this code with its index, without any index, and the baseline's
   code (``--baseline-ref``) with its index, each in a child process on a new file, alternating.
2. Search: fills the store as benchmarks/query.py does (reuses ``--keep``), then times
   ``store.list_traces`` (the code of ``GET /api/traces?q=`` and the ``/traces`` page), first page of 50,
   for each case below, p50 and p95. This code and the baseline (``git archive`` of ``--baseline-ref``'s
   ``src``) run in child processes over the same database, in alternating rounds. Targets: a word that
   occurs nowhere <= 300 ms p95; a word that occurs, first page <= 200 ms p95. ``--baseline-keep``: a
   SQLite copy for the baseline, when this code's migrations took the database past the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))

NO_MATCH_MS, FIRST_PAGE_MS = 300.0, 200.0
ROOT = Path(__file__).resolve().parent.parent
DAY_NS = 86_400 * 10**9

# (label, search text, target, only the last 7 days); the fill's words: "question N about MODEL"
# and "answer N" (LLM spans), "user asks N" and "done" (roots), N a number below 10^6
CASES: list[tuple[str, str, float, bool]] = [
    ("word that occurs nowhere", "xylophone", NO_MATCH_MS, False),
    ("prefix of no word", "xylo*", NO_MATCH_MS, False),
    ("word on every LLM span", "question", FIRST_PAGE_MS, False),
    ("word on 1 LLM span in 4", "mini", FIRST_PAGE_MS, False),
    ("rare word (a number)", "123456", FIRST_PAGE_MS, False),
    ("two words, last 7 days", "question gpt", FIRST_PAGE_MS, False),
    ("prefix of 1 common word", "answ*", FIRST_PAGE_MS, False),
    ("prefix of ~1,100 rare words", "123*", FIRST_PAGE_MS, False),
    ("prefix of ~11,000 words", "12*", FIRST_PAGE_MS, False),
    ("prefix of ~110,000 words", "1*", FIRST_PAGE_MS, False),
]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def child(url: str, repeats: int, now_ns: int) -> None:
    """Time every case with the code on ``sys.path`` (this process's PYTHONPATH); prints JSON."""
    from query import PROJECT

    from pilothouse.domain.queries import TraceQuery
    from pilothouse.store.sql import SqlStore

    store = SqlStore.from_url(url)
    out: dict[str, Any] = {}
    for label, word, _, last_week in CASES:
        query = TraceQuery(search=word, limit=50, start_ns=now_ns - 7 * DAY_NS if last_week else None)
        rows = len(store.list_traces(PROJECT, query).data)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            store.list_traces(PROJECT, query)
            times.append((time.perf_counter() - started) * 1000)
        out[label] = {"times": times, "rows": rows}
    store.close()
    print(json.dumps(out))


def baseline_src(ref: str, folder: Path) -> Path:
    """``src`` of ``ref`` (a git commit or branch of this repository), extracted into ``folder``."""
    archive = subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def run_child(src: Path, url: str, repeats: int, now_ns: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--database-url",
            url,
            "--repeats",
            str(repeats),
            "--now",
            str(now_ns),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def pg_search_index(store: Any, on: bool) -> None:
    """PostgreSQL: the search index on (the traces' trigger, both GIN indexes) or off."""
    with store.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE traces {'ENABLE' if on else 'DISABLE'} TRIGGER traces_search"))
        for table in ("spans", "traces"):
            if on:
                conn.execute(
                    text(f"CREATE INDEX IF NOT EXISTS ix_{table}_search ON {table} USING gin (search)")
                )
            else:
                conn.execute(text(f"DROP INDEX IF EXISTS ix_{table}_search"))


def ingest_child(url: str, spans: int, indexed: bool) -> None:
    """Fill a new SQLite store with the code on ``sys.path``; prints its spans/s as JSON."""
    from query import fill as fill_store

    from pilothouse.store.sql import SqlStore

    store = SqlStore.from_url(url)
    store.index_search = indexed
    started = time.perf_counter()
    fill_store(store, spans, time.time_ns())
    rate = spans / (time.perf_counter() - started)
    store.close()
    print(json.dumps({"rate": rate}))


def sqlite_ingest_against_baseline(folder: Path, base_src: Path, ref: str, spans: int, rounds: int) -> None:
    """SQLite: the batch writer's spans/s with this code's index, without any index, and with the
    baseline's (``--baseline-ref``) index, each in a child process on a new file, in alternating order."""
    configs = [("this", True), ("this", False), ("base", True)]
    rates: dict[tuple[str, bool], list[float]] = {c: [] for c in configs}
    for round_ in range(rounds):
        for which, indexed in configs if round_ % 2 == 0 else configs[::-1]:
            path = folder / f"ingest-{which}-{indexed}-{round_}.db"
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src" if which == "this" else base_src)}
            command = [sys.executable, __file__, "--ingest-child", "--database-url", f"sqlite:///{path}"]
            command += ["--ingest-spans", str(spans), *([] if indexed else ["--no-index"])]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            rates[(which, indexed)].append(json.loads(done.stdout.strip().splitlines()[-1])["rate"])
            for leftover in folder.glob(f"{path.name}*"):
                leftover.unlink()
    print(f"ingest, SQLite batch writer, {spans:,} spans a run, {rounds} alternating rounds (spans/s):")
    base = statistics.median(rates[("base", True)])
    for (which, indexed), found in rates.items():
        label = f"{'this code' if which == 'this' else ref}, {'with' if indexed else 'without'} the index"
        runs, median = ", ".join(f"{r:,.0f}" for r in found), statistics.median(found)
        print(f"  {label:32} median {median:8,.0f} ({runs}); {median / base:.3f}x {ref}")
    print(f"  load average {loadavg()}")


def ingest_cost(url_of: Any, spans: int, rounds: int) -> None:
    """Spans/s of the batch writer with and without the index, alternating, each on an emptied store."""
    from query import fill as fill_store

    from pilothouse.store.sql import SqlStore

    rates: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(rounds):
        for indexed in (False, True) if round_ % 2 == 0 else (True, False):
            store = SqlStore.from_url(url_of(f"ingest-{round_}-{indexed}"))
            store.index_search = indexed
            if store.dialect == "postgresql":
                pg_search_index(store, indexed)
            started = time.perf_counter()
            fill_store(store, spans, time.time_ns())
            rates[indexed].append(spans / (time.perf_counter() - started))
            if store.dialect == "postgresql":
                pg_search_index(store, True)
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
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--baseline-ref", default="main", help="git ref whose src/ is the baseline")
    parser.add_argument("--baseline-repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each code")
    parser.add_argument("--ingest-spans", type=int, default=100_000, help="0: skip the ingest comparison")
    parser.add_argument("--ingest-rounds", type=int, default=2)
    parser.add_argument(
        "--ingest-database-url", default=None, help="PostgreSQL: an expendable database for the ingest rounds"
    )
    parser.add_argument("--baseline-keep", default=None, help="SQLite: the baseline's copy of the database")
    parser.add_argument(
        "--ingest-baseline", action="store_true", help="SQLite: compare the ingest cost with --baseline-ref's"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ingest-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-index", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--now", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.database_url, args.repeats, args.now)
        return
    if args.ingest_child:
        ingest_child(args.database_url, args.ingest_spans, not args.no_index)
        return
    from query import PROJECT, fill

    from pilothouse.store.sql import SqlStore

    print(f"load average before: {loadavg()}")
    folder = Path(tempfile.mkdtemp(prefix="ph-search-"))
    if args.ingest_spans and args.database_url and not args.ingest_database_url:
        print("ingest comparison skipped: give --ingest-database-url, a PostgreSQL database to empty")
    elif args.ingest_spans and args.ingest_database_url:
        print("ingest comparison: PostgreSQL (its tables are emptied between rounds)")

        def pg_url(_: str) -> str:
            store = SqlStore.from_url(args.ingest_database_url)
            with store.engine.begin() as conn:
                rollups = "rollup_minute, rollup_hour, rollup_dim_minute, rollup_dim_hour, rollup_dim_day"
                conn.execute(text(f"TRUNCATE spans, traces, {rollups}"))
            store.close()
            return str(args.ingest_database_url)

        ingest_cost(pg_url, args.ingest_spans, args.ingest_rounds)
    elif args.ingest_spans and args.ingest_baseline:
        sqlite_ingest_against_baseline(
            folder,
            baseline_src(args.baseline_ref, folder / "baseline"),
            args.baseline_ref,
            args.ingest_spans,
            args.ingest_rounds,
        )
    elif args.ingest_spans:
        ingest_cost(lambda name: f"sqlite:///{folder / name}.db", args.ingest_spans, args.ingest_rounds)
    url = args.database_url or f"sqlite:///{args.keep or folder / 'search.db'}"
    store = SqlStore.from_url(url)
    stored = store.count_spans(PROJECT)
    if stored < args.spans:
        print(f"filling {args.spans - stored:,} spans ...", flush=True)
        fill(store, args.spans - stored, time.time_ns(), stored)
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    spans = store.count_spans(PROJECT)
    store.close()
    base_src = folder / "baseline" / "src"
    if not base_src.exists():
        base_src = baseline_src(args.baseline_ref, folder / "baseline")
    base_url = f"sqlite:///{args.baseline_keep}" if args.baseline_keep else url
    print(f"{url.split(':')[0]}: {spans:,} spans; baseline {args.baseline_ref}; load average {loadavg()}")
    now = time.time_ns()
    times: dict[str, dict[str, list[float]]] = {"this": {}, "base": {}}
    rows: dict[str, dict[str, int]] = {"this": {}, "base": {}}
    loads = [loadavg()]
    for round_ in range(args.rounds):
        order = ("this", "base") if round_ % 2 == 0 else ("base", "this")
        for which in order:
            src = ROOT / "src" if which == "this" else base_src
            repeats = args.repeats if which == "this" else args.baseline_repeats
            found = run_child(src, url if which == "this" else base_url, repeats, now)
            for label, result in found.items():
                times[which].setdefault(label, []).extend(result["times"])
                rows[which][label] = result["rows"]
            loads.append(loadavg())
    head = (
        f"{'case (first page of 50)':30} {'search':14} {'p50 ms':>8} {'p95 ms':>8} {'target':>7} {'rows':>5}"
    )
    print(f"{head} | {'baseline p50':>12} {'p95':>8} {'rows':>5}")
    for label, word, target, _ in CASES:
        new, old = times["this"][label], times["base"][label]
        verdict = "ok" if _p(new, 0.95) <= target else "MISSED"
        print(
            f"{label:30} {word:14} {statistics.median(new):8.1f} {_p(new, 0.95):8.1f} {target:7.0f} "
            f"{rows['this'][label]:5} | {statistics.median(old):12.1f} {_p(old, 0.95):8.1f} "
            f"{rows['base'][label]:5}  {verdict}"
        )
    print(f"load average during the rounds: {', '.join(loads)}")
    if not args.keep and not args.database_url:
        for name in os.listdir(folder):
            path = folder / name
            if path.is_file():
                path.unlink()


if __name__ == "__main__":
    main()
