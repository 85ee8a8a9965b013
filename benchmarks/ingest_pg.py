"""PostgreSQL ingest, before and after, in one run: ``python benchmarks/ingest.py --database-url
postgresql://postgres@127.0.0.1:5432/postgres --compare-copy [--workers 2] [--baseline-src DIR]``.

Each run gets a new PostgreSQL database (created on the server of --database-url and dropped after):
the row-by-row INSERT path (``PILOTHOUSE_INGEST_COPY=0``, the code before issue 26) and the binary COPY
path alternate, with the SQLite default measured in the same run, and the load average printed (the
figures of a loaded machine are noisy: compare within one run only). With ``--baseline-src DIR`` (another
checkout's ``src``, e.g. the main branch's) the servers of that code's COPY path take the INSERT path's
place: the code before a change against this tree's. PostgreSQL's own CPU per span (its processes
serving the database, from /proc: PostgreSQL must run on this machine) is printed next to Pilothouse's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import uuid
from collections.abc import Callable
from pathlib import Path

from _common import CLK_TCK, cpu_seconds

Measure = Callable[..., dict[str, float]]


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants (the workers of ``serve --workers N``)."""
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            total += cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def postgres_cpu_seconds(admin_url: str, url: str) -> float:
    """CPU time of the PostgreSQL processes now serving the database of ``url`` (its backends)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (url.rsplit("/", 1)[1],)
        ).fetchall()
    total = 0.0
    for (pid,) in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def _new_database(admin_url: str) -> str:
    import psycopg

    name = f"ph_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def _drop_database(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def compare_copy(args: argparse.Namespace, bodies: list[bytes], repeats: int, measure: Measure) -> None:
    """SQLite default, PostgreSQL row by row, PostgreSQL by COPY: ``repeats`` runs each, alternating."""
    admin_url = args.database_url
    before = "postgresql COPY (baseline src)" if args.baseline_src else "postgresql INSERT (before)"
    modes = {"sqlite (default)": None, before: "0", "postgresql COPY (after)": "1"}
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    load_before = os.getloadavg()
    for _ in range(repeats):
        for mode, copy in modes.items():
            if copy is None:
                runs[mode].append(measure(argparse.Namespace(**{**vars(args), "database_url": None}), bodies))
                continue
            url = _new_database(admin_url)
            try:
                run_args = argparse.Namespace(**{**vars(args), "database_url": url, "admin_url": admin_url})
                env = {"PILOTHOUSE_INGEST_COPY": copy}
                if args.baseline_src and copy == "0":
                    env = {
                        "PILOTHOUSE_INGEST_COPY": "1",
                        "PYTHONPATH": str(Path(args.baseline_src).resolve()),
                    }
                elif args.baseline_src:
                    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "src")
                runs[mode].append(measure(run_args, bodies, extra_env=env))
            finally:
                _drop_database(admin_url, url)
    load_after = os.getloadavg()
    print(f"median of {repeats} runs per mode, alternating; --workers {args.workers or 'default'}")
    print(f"{'mode':31} {'spans/s':>10} {'CPU ms/span':>12} {'PostgreSQL ms/span':>19} {'B/span':>8}")
    for mode, rs in runs.items():
        rate = statistics.median(r["rate"] for r in rs)
        cpu = statistics.median(r["cpu_ms"] for r in rs)
        pg_cpu = statistics.median(r.get("pg_cpu_ms", 0.0) for r in rs)
        size = statistics.median(r["bytes"] for r in rs)
        print(f"{mode:31} {rate:10,.0f} {cpu:12.4f} {pg_cpu:19.4f} {size:8,.0f}")
    pairs = ", ".join(
        f"{b['rate'] / a['rate']:.2f}"
        for a, b in zip(runs[before], runs["postgresql COPY (after)"], strict=True)
    )
    before_rate = statistics.median(r["rate"] for r in runs[before])
    after = statistics.median(r["rate"] for r in runs["postgresql COPY (after)"])
    print(
        f"after / {before.split(' ', 1)[1]} spans/s: {after / before_rate:.2f}x (pair by pair: {pairs}; "
        "targets: >= 20,000 spans/s, <= 1,500 B/span)"
    )
    print(
        f"cores: {os.cpu_count()}; load average before {', '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.2f}' for x in load_after)} (a machine shared with other work)"
    )
