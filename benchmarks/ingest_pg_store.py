"""PostgreSQL's span write alone (``SqlStore.write_spans``), by CPU time as well as the wall clock:

    python benchmarks/ingest_pg_store.py [--spans 20000] [--batch 5000] [--repeats 3]
        [--paths copy,insert] [--baseline-src /work/main/src]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

The benchmark's OpenInference spans (those of ``benchmarks/ingest.py``) are decoded and normalised
once per run, then stored in writes of --batch into a new database per run. Each run is a process of
its own; the paths alternate: this tree's binary ``COPY`` path (``copy``), its row-by-row ``INSERT``
path (``insert``) and, with --baseline-src, the ``COPY`` path of another checkout's ``src`` (``baseline``:
the code before a change, e.g. the main branch's). Per path, the median of:

- spans/s by the wall clock (PostgreSQL's own CPU included, which ``ingest.py`` cannot see);
- the writer's CPU (this process: Pilothouse's Python, psycopg) and PostgreSQL's (the CPU time of the
  database's server processes, from /proc: PostgreSQL must run on this machine), in us per span; on a
  shared machine CPU time is steadier than the wall clock, which waits for the other work too;
- stored bytes per span (tables and indexes, as ``ingest.py`` counts them).

Prints the load average before and after (compare within one run only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import CLK_TCK, build_bodies
from ingest import stored_bytes
from ingest_pg import _drop_database, _new_database

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def records(spans: int) -> list:  # type: ignore[type-arg]
    """The benchmark's spans as the collector hands them to the store."""
    from pilothouse.tracing.conventions import normalise_span
    from pilothouse.tracing.otlp import decode_protobuf

    return [
        normalise_span(raw, "default") for body in build_bodies(spans, 500) for raw in decode_protobuf(body)
    ]


def _server_cpu_seconds(conn: object, database: str) -> float:
    """CPU time of the PostgreSQL server processes serving ``database`` (its backends)."""
    pids = [
        row[0]
        for row in conn.execute(  # type: ignore[attr-defined]
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    ]
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def one_run(admin_url: str, spans: int, size: int, copy: bool) -> dict[str, float]:
    """Store the spans into a new database in writes of ``size``: the figures of this run."""
    import psycopg

    from pilothouse.store.sql import SqlStore

    batch = records(spans)
    url = _new_database(admin_url)
    database = url.rsplit("/", 1)[1]
    store = SqlStore.from_url(url)
    try:
        store.copy_spans = copy
        store.write_spans(batch[:size])  # the statements compiled and prepared, the staging tables made
        rest = batch[size:]
        empty = stored_bytes(url)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            server_before = _server_cpu_seconds(admin, database)
            cpu_before = time.process_time()
            started = time.perf_counter()
            for i in range(0, len(rest), size):
                store.write_spans(rest[i : i + size])
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
            server = _server_cpu_seconds(admin, database) - server_before
        return {
            "rate": len(rest) / wall,
            "writer_us": cpu * 1e6 / len(rest),
            "server_us": server * 1e6 / len(rest),
            "bytes": (stored_bytes(url) - empty) / len(rest),
        }
    finally:
        store.close()
        _drop_database(admin_url, url)


def _in_process(src: Path, args: argparse.Namespace, copy: bool) -> dict[str, float]:
    """One run in a new Python process that imports Pilothouse from ``src``."""
    code = (
        "import json, sys; from ingest_pg_store import one_run; "
        f"print(json.dumps(one_run({args.database_url!r}, {args.spans}, {args.batch}, {copy})))"
    )
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{HERE}"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000, help="spans per write (the server's chunk)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default="copy,insert", help="of this tree: copy, insert (comma-separated)")
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src: its COPY path as well")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    paths: dict[str, tuple[Path, bool]] = {}
    if args.baseline_src:
        paths["baseline (COPY, --baseline-src)"] = (args.baseline_src.resolve(), True)
    names = {"copy": "COPY (this tree)", "insert": "INSERT per row (this tree)"}
    for path in args.paths.split(","):
        paths[names[path]] = (SRC, path == "copy")
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, (src, copy) in paths.items():
            run = _in_process(src, args, copy)
            runs[name].append(run)
            print(f"  {name}: " + ", ".join(f"{k} {v:,.1f}" for k, v in run.items()), flush=True)
    load_after = os.getloadavg()
    print(
        f"{args.spans} spans in writes of {args.batch} (the first write not timed), "
        f"median of {args.repeats} runs per path, alternating"
    )
    print(f"{'path':34} {'spans/s':>9} {'writer us/span':>15} {'PostgreSQL us/span':>19} {'B/span':>8}")
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(
            f"{name:34} {med['rate']:9,.0f} {med['writer_us']:15.1f} {med['server_us']:19.1f} "
            f"{med['bytes']:8,.0f}"
        )
    print(
        f"cores: {os.cpu_count()}; load average before {', '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.2f}' for x in load_after)} (a machine shared with other work)"
    )


if __name__ == "__main__":
    main()
