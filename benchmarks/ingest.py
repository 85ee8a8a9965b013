"""Ingest benchmark: LLM spans over OTLP/HTTP protobuf, timed until all are queryable through the API.

    python benchmarks/ingest.py [--spans 20000] [--batch 500] [--database-url postgresql://...]
                                [--prefill 400000] [--repeats 3] [--durable]

Prints spans/s end to end, server CPU per span and stored bytes per span, with the ratio against Arize
Phoenix 20.26.1 measured in the same run on the first --baseline-spans spans of the same payload
(benchmarks/baseline_phoenix.py; it installs Phoenix into /tmp/phoenix-venv on first use; Phoenix is
slow, hence fewer spans). --baseline-spans 0 skips it and uses the issue's figures (86-102 spans/s,
10-12 ms CPU/span, 3,010 B/span). Targets: >= 20,000 spans/s, <= 0.05 ms CPU/span, <= 1,500 B/span.
--prefill N first stores N other spans through the same server (not timed), to see how ingest holds up
as the store grows; or --database-url names a store filled before (e.g. benchmarks/ui.py's) with
--project NEW, a project of its own, so that only the new spans are waited for (they go into the same
tables and indexes), and PostgreSQL's own CPU per span is printed too. The figures are the median of
--repeats runs (3 by default, each on a new server and SQLite file; 1 with --database-url or --prefill).
--workers N runs N server processes on PostgreSQL (with Redis: PILOTHOUSE_REDIS_URL); --compare-copy
(benchmarks/ingest_pg.py) measures the SQLite default, PostgreSQL's row-by-row INSERT and its binary COPY
path in the same run, with PostgreSQL's own CPU per span; --baseline-src DIR (another checkout's src, e.g.
main's) puts that code's COPY path in the INSERT path's place.
--compare-workers measures SQLite with one process against --workers N (default 2: N workers handing
their spans to the one span writer process; Redis from $PILOTHOUSE_REDIS_URL, else local), alternating.
--durable measures the durable mode (`server.durable`: each export on the spool, fsynced, before its
200) against the default in-memory mode in the same run, runs alternating, and prints the cost of
durability (target: <= 20% fewer spans/s); the Phoenix baseline is skipped then.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import Server, build_bodies, create_key, send_all
from baseline_phoenix import measure_phoenix
from ingest_pg import compare_copy, postgres_cpu_seconds, tree_cpu_seconds

PHOENIX = {"spans_per_s": (86 + 102) / 2, "cpu_ms_per_span": (10 + 12) / 2, "bytes_per_span": 3010}


def stored_bytes(database_url: str) -> int:
    if database_url.startswith("sqlite"):
        path = database_url.split("sqlite:///", 1)[1]
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'ph_partitions') AND c.relkind = 'r'"  # spans' partitions too
        ).fetchone()
        return int(row[0])


def wait_stored(base_url: str, headers: dict[str, str], total: int) -> None:
    """Until ``total`` model calls are queryable through the API (the dashboard endpoint counts every
    stored one)."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        while True:
            data = http.get("/api/metrics/models", params={"from": "1d", "granularity": "day"}).json()["data"]
            if sum(row["count"] for row in data) >= total:
                return
            time.sleep(0.02)  # each poll costs server CPU too: keep them few


def prefill(base_url: str, headers: dict[str, str], spans: int, batch: int) -> None:
    """Store ``spans`` other spans first (older ones, in rounds of 20,000 to bound memory)."""
    started, done = time.perf_counter(), 0
    auth = {"Authorization": headers["Authorization"]}
    while done < spans:
        n = min(20_000, spans - done)
        ago = 3 * 3600 + (spans - done) // 1000  # before the measured spans, in time order
        send_all(base_url, build_bodies(n, batch, seed=1000 + done, ago_s=ago), 2, auth, retry_scale=0.1)
        done += n
    wait_stored(base_url, headers, spans)
    print(f"prefilled {spans:,} spans in {time.perf_counter() - started:.0f} s")


def measure(
    args: argparse.Namespace,
    bodies: list[bytes],
    durable: bool = False,
    extra_env: dict[str, str] | None = None,
) -> dict[str, float]:
    """One run on a new server (and, unless --database-url is given, a new SQLite file); ``durable``:
    with the durable mode's spool (in a new folder); ``extra_env``: more server settings."""
    total = len(bodies) * args.batch
    folder = tempfile.mkdtemp(prefix="ph-bench-ingest-")
    url = args.database_url or f"sqlite:///{folder}/ingest.db"
    # by the server's code (--baseline-src's, or this tree's)
    key = create_key(url, extra_env, getattr(args, "project", "default"))
    config = Path(folder) / "sim.yaml"  # a gateway model for --durable's call latencies
    config.write_text("models:\n  - name: sim\n    provider: sim\n")
    env = {"PILOTHOUSE_HOME": folder, "PILOTHOUSE_DURABLE": "1" if durable else "0", **(extra_env or {})}
    if args.workers and not url.startswith("sqlite"):
        env["PILOTHOUSE_WORKERS"] = str(args.workers)
    server = Server(url, env={**env, "PILOTHOUSE_CONFIG": str(config)} if args.durable else env)
    calls: list[float] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"}
    try:
        if args.prefill:
            prefill(server.base_url, headers, args.prefill, args.batch)
        empty_bytes = stored_bytes(url)
        admin_url = getattr(args, "admin_url", None)  # PostgreSQL's CPU: --compare-copy's runs
        pg_before = postgres_cpu_seconds(admin_url, url) if admin_url else 0.0
        cpu_before = tree_cpu_seconds(server.pid)
        started = time.perf_counter()
        retries = send_all(
            server.base_url, bodies, args.senders, {"Authorization": f"Bearer {key}"}, retry_scale=0.1
        )
        sent = time.perf_counter() - started
        wait_stored(server.base_url, headers, args.prefill + total)
        elapsed = time.perf_counter() - started
        cpu = tree_cpu_seconds(server.pid) - cpu_before
        pg_cpu = postgres_cpu_seconds(admin_url, url) - pg_before if admin_url else 0.0
        if args.durable:
            calls = call_latencies(server.base_url, key, args.calls)
    finally:
        server.stop()
    run = {
        "accept_rate": total / sent,
        "call_p50_ms": statistics.median(calls) if calls else 0.0,
        "call_p99_ms": statistics.quantiles(calls, n=100)[98] if calls else 0.0,
        "rate": total / elapsed,
        "cpu_ms": cpu * 1000 / total,
        "pg_cpu_ms": pg_cpu * 1000 / total,
        "bytes": (stored_bytes(url) - empty_bytes) / total,
    }
    print(
        f"sent in {sent:.2f} s, all queryable after {elapsed:.2f} s ({retries} 429 retries): "
        f"{run['rate']:,.0f} spans/s, {run['cpu_ms']:.4f} ms CPU/span"
        + (f" + PostgreSQL {run['pg_cpu_ms']:.4f}" if admin_url else "")
        + f", {run['bytes']:,.0f} B/span "
        f"({url.split('@')[-1]}{', durable' if durable else ''})"
        + (f"; gateway call p50 {run['call_p50_ms']:.2f}, p99 {run['call_p99_ms']:.2f} ms" if calls else ""),
        flush=True,
    )
    return run


def call_latencies(base_url: str, key: str, calls: int) -> list[float]:
    """Milliseconds of ``calls`` non-streamed chat completions one after another (the simulated model,
    0 ms): in the durable mode each answer waits for its record's fsync."""
    body = json.dumps({"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    try:
        for _ in range(calls):
            started = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body, headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            out.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--senders", type=int, default=2, help="concurrent HTTP senders")
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    parser.add_argument("--prefill", type=int, default=0, help="spans stored first, not timed")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs, median reported (default 3; 1 with --database-url or --prefill)",
    )
    parser.add_argument("--baseline-spans", type=int, default=2000, help="spans sent to Phoenix (0: skip)")
    parser.add_argument(
        "--durable", action="store_true", help="the durable mode against the in-memory one, same run"
    )
    parser.add_argument("--calls", type=int, default=500, help="--durable: gateway calls timed per run")
    parser.add_argument(
        "--workers", type=int, default=None, help="server processes on PostgreSQL (SQLite runs one)"
    )
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="--compare-copy: another checkout's src (e.g. main's) whose COPY path replaces the INSERT path",
    )
    parser.add_argument(
        "--compare-copy",
        action="store_true",
        help="with a postgresql:// --database-url (an admin URL: a database is created per run): the "
        "SQLite default, PostgreSQL row by row and PostgreSQL by COPY, same run",
    )
    parser.add_argument(
        "--compare-workers",
        action="store_true",
        help="SQLite: one process against --workers N (default 2) and the span writer, runs alternating",
    )
    parser.add_argument(
        "--project",
        default="default",
        help="the project the spans go to: a new one to add spans to a store filled before (--database-url)",
    )
    args = parser.parse_args()
    if args.database_url and args.database_url.startswith("postgresql") and not args.compare_copy:
        args.admin_url = args.database_url  # PostgreSQL's CPU: of the database's backends
    if (args.workers or 1) > 1 and not args.compare_workers and not os.environ.get("PILOTHOUSE_REDIS_URL"):
        parser.error(
            "--workers above 1 needs Redis: set PILOTHOUSE_REDIS_URL (e.g. redis://127.0.0.1:6379/0)"
        )

    repeats = args.repeats or (1 if args.database_url or args.prefill else 3)
    if repeats > 1 and args.database_url and not (args.compare_copy or args.compare_workers):
        # the same spans again into the same store are duplicates: nothing new to store or wait for
        parser.error(
            "--repeats above 1 with --database-url would send the same spans into the same store again: "
            "use --compare-copy (a new database per run on that server) or run the command again"
        )
    bodies = build_bodies(args.spans, args.batch)
    total = len(bodies) * args.batch
    print(
        f"payload: {total} spans in {len(bodies)} requests, "
        f"{sum(map(len, bodies)) / total:.0f} wire bytes/span"
    )
    if args.durable:
        compare_durable(args, bodies, repeats)
        return
    if args.compare_copy:
        compare_copy(args, bodies, args.repeats or 1, measure)
        return
    if args.compare_workers:
        compare_workers(args, bodies, repeats)
        return
    runs = [measure(args, bodies) for _ in range(repeats)]
    rate = statistics.median(r["rate"] for r in runs)
    cpu_ms = statistics.median(r["cpu_ms"] for r in runs)
    per_span_bytes = statistics.median(r["bytes"] for r in runs)
    if repeats > 1:
        print(f"median of {repeats} runs, each on a new server and database")
    phoenix, source = PHOENIX, "issue figures"
    if args.baseline_spans:
        n_bodies = max(1, args.baseline_spans // args.batch)
        phoenix = measure_phoenix(
            bodies[:n_bodies], n_bodies * args.batch, tempfile.mkdtemp(prefix="ph-phoenix-")
        )
        source = f"measured now, {n_bodies * args.batch} spans"
    print(f"baseline: Arize Phoenix 20.26.1 ({source})")
    print(f"{'metric':28} {'pilothouse':>12} {'phoenix':>10} {'ratio':>8} {'target':>10}")
    print(
        f"{'spans/s end to end':28} {rate:12,.0f} {phoenix['spans_per_s']:10,.0f} "
        f"{rate / phoenix['spans_per_s']:7.0f}x {'>= 20,000':>10}"
    )
    print(
        f"{'server CPU ms/span':28} {cpu_ms:12.4f} {phoenix['cpu_ms_per_span']:10.1f} "
        f"{phoenix['cpu_ms_per_span'] / cpu_ms:7.0f}x {'<= 0.05':>10}"
    )
    print(
        f"{'stored bytes/span':28} {per_span_bytes:12,.0f} {phoenix['bytes_per_span']:10,.0f} "
        f"{phoenix['bytes_per_span'] / per_span_bytes:7.1f}x {'<= 1,500':>10}"
    )
    print(f"cores: {os.cpu_count()}")


def compare_durable(args: argparse.Namespace, bodies: list[bytes], repeats: int) -> None:
    """The durable mode against the default, runs alternating (the same machine state for both)."""
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(repeats):
        for durable in (False, True):
            runs[durable].append(measure(args, bodies, durable))
    median = {
        durable: {m: statistics.median(r[m] for r in rs) for m in runs[False][0]}
        for durable, rs in runs.items()
    }
    off, on = median[False], median[True]
    pairs = sorted(b["rate"] / a["rate"] for a, b in zip(runs[False], runs[True], strict=True))
    print(f"median of {repeats} runs per mode, alternating, each on a new server and database")
    print(f"{'metric':28} {'in-memory':>12} {'durable':>12} {'cost':>8} {'target':>10}")
    print(
        f"{'spans/s end to end':28} {off['rate']:12,.0f} {on['rate']:12,.0f} "
        f"{(1 - on['rate'] / off['rate']) * 100:7.1f}% {'<= 20%':>10}"
    )
    print(
        f"{'server CPU ms/span':28} {off['cpu_ms']:12.4f} {on['cpu_ms']:12.4f} "
        f"{(on['cpu_ms'] / off['cpu_ms'] - 1) * 100:7.1f}%"
    )
    print(
        f"{'spans/s accepted (all 200s)':28} {off['accept_rate']:12,.0f} {on['accept_rate']:12,.0f} "
        f"{(1 - on['accept_rate'] / off['accept_rate']) * 100:7.1f}%"
    )
    for name in ("call_p50_ms", "call_p99_ms"):
        label = f"gateway call {name[5:8]} ms, 1 conn"
        print(f"{label:28} {off[name]:12.2f} {on[name]:12.2f} {on[name] - off[name]:+7.2f}ms")
    print("durable/in-memory spans/s, pair by pair: " + ", ".join(f"{r:.2f}" for r in pairs))
    print(f"cores: {os.cpu_count()}")


def compare_workers(args: argparse.Namespace, bodies: list[bytes], repeats: int) -> None:
    """SQLite with one process against ``--workers N`` (its workers hand their spans to the one span
    writer process): ``repeats`` runs each, alternating, each on a new server and file."""
    workers = args.workers or 2
    redis_url = os.environ.get("PILOTHOUSE_REDIS_URL", "redis://127.0.0.1:6379/0")
    modes = {
        "sqlite, 1 process": {"PILOTHOUSE_WORKERS": "1"},
        f"sqlite, {workers} workers + writer": {
            "PILOTHOUSE_WORKERS": str(workers),
            "PILOTHOUSE_REDIS_URL": redis_url,
        },
    }
    one_process = argparse.Namespace(**{**vars(args), "database_url": None, "workers": None})
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    load_before = os.getloadavg()
    for _ in range(repeats):
        for mode, env in modes.items():
            runs[mode].append(measure(one_process, bodies, extra_env=env))
    load_after = os.getloadavg()
    print(f"median of {repeats} runs per mode, alternating, each on a new server and SQLite file")
    print(f"{'mode':28} {'spans/s':>10} {'CPU ms/span':>12} {'B/span':>8}  runs (spans/s)")
    for mode, rs in runs.items():
        rate = statistics.median(r["rate"] for r in rs)
        cpu = statistics.median(r["cpu_ms"] for r in rs)
        size = statistics.median(r["bytes"] for r in rs)
        each = ", ".join(f"{r['rate']:,.0f}" for r in rs)
        print(f"{mode:28} {rate:10,.0f} {cpu:12.4f} {size:8,.0f}  {each}")
    print(
        f"cores: {os.cpu_count()}; load average before {', '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.2f}' for x in load_after)} (a machine shared with other work: upper "
        "bounds of the cost, compare only within this run)"
    )


if __name__ == "__main__":
    main()
