"""Where PostgreSQL's CPU goes in the store's write path (``SqlStore.write_spans``, ``COPY``), per span:

    python benchmarks/ingest_pg_profile.py [--spans 20000] [--batch 5000] [--repeats 3] [--gateway]
        [--variants main,-ix_traces_user,...] [--src SRC] [--baseline-src /work/main/src]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Two views of the same runs (the spans of ``benchmarks/ingest_pg_store.py``, a new database per run, each
run a process of its own, the variants alternating, the first write not timed):

- by statement: the CPU time the writing backend spent in each statement the writer sent (read from
  ``/proc/<pid>/schedstat`` around it, nanoseconds; the commit included), in us per span;
- by piece: each variant's backend CPU per span with one piece of the schema or of the writer removed
  (``-ix_NAME``: an index dropped; ``-trigger``: the traces' search trigger dropped; ``-rollups``: no
  rollup rows written; ``-dim_rollups``: none of the dimension rollups'), against ``main`` (all of it);
  ``--baseline-src``: another checkout's writer as well (``baseline``, e.g. the main branch's).

``--gateway``: spans shaped as the gateway records a traced call of ``benchmarks/gateway_workers.py``
instead (one generation per trace, model ``sim``, one key, no user, session or tags, small texts, in
the last minute): a batch touches a dozen rollup rows, where the benchmark's spans (200 users) touch
hundreds.

PostgreSQL must run on this machine (its backends' /proc). Prints the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from ingest_pg import _drop_database

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def _new_database(admin_url: str, tag: str) -> str:
    import uuid

    import psycopg

    name = f"ph_bench_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def _on_cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _label(sql: str) -> str:
    words = " ".join(sql.split())
    for key in ("INSERT INTO ", "COPY ", "SELECT ", "DELETE FROM ", "CREATE TEMPORARY TABLE IF NOT EXISTS "):
        if words.startswith(key):
            rest = words[len(key) :].split()[0]
            if key == "SELECT ":
                return "SELECT " + ("seen spans" if "LEFT JOIN spans" in words else rest)
            return key.split()[0] + " " + rest
    return words[:40]


class StatementClock:
    """Backend CPU per statement label, by patching psycopg's cursor and connection."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)
        self.on = False

    @contextmanager
    def timed(self, conn: Any, label: str) -> Iterator[None]:
        if not self.on:
            yield
            return
        pid = conn.info.backend_pid
        before = _on_cpu_ns(pid)
        try:
            yield
        finally:
            self.ns[label] += _on_cpu_ns(pid) - before

    def install(self) -> None:
        import psycopg

        clock = self
        execute, copy, commit = psycopg.Cursor.execute, psycopg.Cursor.copy, psycopg.Connection.commit
        executemany = psycopg.Cursor.executemany

        def timed_execute(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            with clock.timed(cur.connection, _label(str(query))):
                return execute(cur, query, *args, **kwargs)

        def timed_executemany(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            with clock.timed(cur.connection, _label(str(query))):
                return executemany(cur, query, *args, **kwargs)

        @contextmanager
        def timed_copy(cur: Any, statement: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with (
                clock.timed(cur.connection, _label(str(statement))),
                copy(cur, statement, *args, **kwargs) as c,
            ):
                yield c

        def timed_commit(conn: Any) -> None:
            with clock.timed(conn, "COMMIT"):
                commit(conn)

        psycopg.Cursor.execute = timed_execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = timed_executemany  # type: ignore[method-assign]
        psycopg.Cursor.copy = timed_copy  # type: ignore[method-assign,assignment]
        psycopg.Connection.commit = timed_commit  # type: ignore[method-assign]


def _apply(store: Any, url: str, variant: str) -> None:
    """Remove the variant's piece from the new database (or the writer)."""
    import psycopg

    if variant == "main":
        return
    if variant == "-rollups":
        store._write_rollup = lambda conn, rollup, rows: None
        return
    if variant == "-dim_rollups":
        from pilothouse.store import tables as t

        dims = {rollup for _, rollup in t.DIM_ROLLUPS}
        write = store._write_rollup
        store._write_rollup = lambda conn, rollup, rows: None if rollup in dims else write(conn, rollup, rows)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        if variant == "-trigger":
            conn.execute("DROP TRIGGER traces_search ON traces")
        elif variant.startswith("-uq_") or variant.startswith("-pk_") or variant == "-traces_pkey":
            table = "spans" if "spans" in variant else "traces"
            conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {variant[1:]}")
        elif variant.startswith("-ix_"):
            conn.execute(f"DROP INDEX {variant[1:]}")
        else:
            raise SystemExit(f"unknown variant {variant}")


def gateway_records(spans: int) -> list[Any]:
    """Spans as the gateway records ``benchmarks/gateway_workers.py``'s calls (``--gateway``)."""
    from pilothouse.domain.traces import (
        Observation,
        ObservationKind,
        SpanRecord,
        Status,
        TraceAttributes,
        Usage,
    )

    now = time.time_ns()
    out = []
    for i in range(spans):
        start = now - 60 * 10**9 + i * 100_000
        observation = Observation(
            trace_id=os.urandom(16).hex(),
            id=os.urandom(8).hex(),
            parent_id=None,
            name="chat sim",
            kind=ObservationKind.GENERATION,
            start_ns=start,
            end_ns=start + 150_000 + (i % 7) * 20_000,
            status=Status.OK,
            input='[{"role": "user", "content": "Say hello in one short sentence."}]',
            output="Hello from the simulator.",
            attributes={
                "gateway.http_status": 200,
                "gateway.attempts": [{"deployment": "sim", "status": 200}],
                "gateway.key_id": "key_bench",
            },
            provider="sim",
            request_model="sim",
            model="sim",
            usage=Usage(input=9, output=5),
        )
        out.append(SpanRecord("default", observation, TraceAttributes()))
    return out


def one_run(admin_url: str, spans: int, size: int, variant: str, gateway: bool = False) -> dict[str, Any]:
    from ingest_pg_store import records

    from pilothouse.store.sql import SqlStore

    clock = StatementClock()
    clock.install()
    batch = gateway_records(spans) if gateway else records(spans)
    url = _new_database(admin_url, "pgcpu")
    store = SqlStore.from_url(url)
    try:
        _apply(store, url, variant)
        store.write_spans(batch[:size])
        rest = batch[size:]
        with store.engine.connect() as conn:
            pid = conn.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
        before = _on_cpu_ns(pid)
        clock.on = True
        started = time.perf_counter()
        for i in range(0, len(rest), size):
            store.write_spans(rest[i : i + size])
        wall = time.perf_counter() - started
        clock.on = False
        total = _on_cpu_ns(pid) - before
        return {
            "server_us": total / 1e3 / len(rest),
            "rate": len(rest) / wall,
            "statements": {k: v / 1e3 / len(rest) for k, v in clock.ns.items()},
        }
    finally:
        store.close()
        _drop_database(admin_url, url)


def _in_process(src: Path, args: argparse.Namespace, variant: str) -> dict[str, Any]:
    code = (
        "import json; from ingest_pg_profile import one_run; "
        f"print(json.dumps(one_run({args.database_url!r}, {args.spans}, {args.batch}, {variant!r}, "
        f"{args.gateway!r})))"
    )
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{HERE}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="main", help="comma-separated: main, -ix_NAME, -trigger, ...")
    parser.add_argument("--src", type=Path, default=SRC, help="the checkout's src whose writer is measured")
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src: variant 'baseline'")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--gateway", action="store_true", help="spans shaped as the gateway's traced calls")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if args.baseline_src:
        variants.append("baseline")
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            src = args.baseline_src if v == "baseline" else args.src
            run = _in_process(src.resolve(), args, "main" if v == "baseline" else v)
            runs[v].append(run)
            print(f"  {v}: PostgreSQL {run['server_us']:.1f} us/span, {run['rate']:,.0f} spans/s", flush=True)
    load_after = os.getloadavg()
    base = statistics.median(r["server_us"] for r in runs[variants[0]])
    shape = "gateway-shaped " if args.gateway else ""
    print(f"{args.spans} {shape}spans in writes of {args.batch}, median of {args.repeats} runs, alternating")
    print(f"{'variant':28} {'PostgreSQL us/span':>19} {'vs ' + variants[0]:>12} {'spans/s':>9}")
    for v, rs in runs.items():
        us = statistics.median(r["server_us"] for r in rs)
        rate = statistics.median(r["rate"] for r in rs)
        print(f"{v:28} {us:19.1f} {us - base:12.1f} {rate:9,.0f}")
    shown = [variants[0], *(["baseline"] if args.baseline_src else [])]
    print(f"by statement (us/span, median of {args.repeats}): {' | '.join(shown)}")
    labels = sorted({k for v in shown for r in runs[v] for k in r["statements"]})
    rows = [
        ([statistics.median(r["statements"].get(k, 0.0) for r in runs[v]) for v in shown], k) for k in labels
    ]
    for us, k in sorted(rows, reverse=True):
        print(f"  {k[:58]:58} " + " | ".join(f"{u:7.1f}" for u in us))
    print(
        f"cores: {os.cpu_count()}; load average before {', '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.2f}' for x in load_after)}"
    )


if __name__ == "__main__":
    main()
