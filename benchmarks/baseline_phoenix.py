"""Baseline for the ingest benchmark: Arize Phoenix 20.26.1 receiving the same OTLP/HTTP spans.

    python benchmarks/baseline_phoenix.py [--spans 2000] [--batch 500] [--workdir DIR]

Installs Phoenix into its own virtualenv (/tmp/phoenix-venv, reused when present), serves it on free
loopback ports with its default SQLite database in a new working directory, posts the export bodies
from 2 concurrent senders and waits until Phoenix's GraphQL API counts every span in the default
project. Measured as benchmarks/ingest.py measures Pilothouse: spans/s from the first POST until all
are queryable, server CPU ms per span (from /proc, child processes included) and stored bytes per
span (SQLite pages in use after a WAL checkpoint, less those right after start). Nothing is sent off
the machine apart from the PyPI install: Phoenix's telemetry and external resources are turned off.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import build_bodies, ensure_venv, send_all

from pilothouse.testing import free_port

PHOENIX_VERSION = "20.26.1"
VENV = Path("/tmp/phoenix-venv")
SENDERS = 2
POLL_S = 0.5  # each count query costs Phoenix CPU too: keep them few
STOP_GRACE_S = 20
COUNT_QUERY = "{ projects { edges { node { name recordCount } } } }"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def ensure_phoenix(venv: Path = VENV) -> Path:
    """The ``python`` of a virtualenv with arize-phoenix==PHOENIX_VERSION, created and installed if needed."""
    return ensure_venv(venv, "arize-phoenix", PHOENIX_VERSION, f"arize-phoenix=={PHOENIX_VERSION}", "phoenix")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its live descendants and the children it has reaped."""
    stats: dict[int, tuple[int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        stats[int(entry.name)] = (int(fields[1]), fields)
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        if current not in stats:
            continue
        fields = stats[current][1]
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        todo.extend(child for child, (ppid, _) in stats.items() if ppid == current)
    return total / CLK_TCK


def sqlite_stored_bytes(workdir: Path) -> int:
    """Bytes in use in the SQLite databases of a Phoenix working directory, after a WAL checkpoint."""
    total = 0
    for path in sorted(workdir.glob("*.db")):
        with sqlite3.connect(path, timeout=30) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
        total += (pages - free) * size
    return total


def sqlite_file_bytes(workdir: Path) -> int:
    """Size on disk of the database files and their write-ahead logs."""
    return sum(p.stat().st_size for p in workdir.iterdir() if p.name.endswith((".db", ".db-wal")))


def phoenix_env(workdir: Path, port: int, grpc_port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PHOENIX_", "OTEL_", "PYTHON", "VIRTUAL_ENV", "PIP_"))
    }
    env.update(
        PHOENIX_WORKING_DIR=str(workdir),
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),  # 20.26.1 cannot turn gRPC off outside read-only mode
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        PHOENIX_LOGGING_LEVEL="warning",
        PHOENIX_LOG_MIGRATIONS="false",
    )
    return env


class PhoenixServer:
    """``phoenix serve`` (the venv's ``python -m phoenix.server.main serve``) on free loopback ports."""

    def __init__(self, python: Path, workdir: Path) -> None:
        self.port = free_port()
        self.grpc_port = free_port()
        while self.grpc_port == self.port:
            self.grpc_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "phoenix-server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(python), "-m", "phoenix.server.main", "serve"],
            env=phoenix_env(workdir, self.port, self.grpc_port),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(self.base_url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"phoenix did not start; log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def span_count(self, http: httpx.Client) -> int:
        r = http.post("/graphql", json={"query": COUNT_QUERY})
        r.raise_for_status()
        payload = r.json()
        if payload.get("errors"):
            raise RuntimeError(f"graphql error: {payload['errors']}")
        edges = payload["data"]["projects"]["edges"]
        return sum(int(e["node"]["recordCount"]) for e in edges if e["node"]["name"] == "default")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                print("phoenix: no exit 20 s after SIGTERM, killing it", flush=True)
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()


def measure_phoenix(bodies: list[bytes], spans: int, workdir: str) -> dict[str, float]:
    """Phoenix's spans/s end to end, server CPU ms per span and stored bytes per span for ``bodies``
    (OTLP ExportTraceServiceRequest bytes holding ``spans`` spans in all), with its data in ``workdir``."""
    python = ensure_phoenix()
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    server = PhoenixServer(python, work)
    print(
        f"phoenix: serving on {server.base_url} (gRPC {server.grpc_port}) after "
        f"{time.perf_counter() - t0:.1f} s, working dir {work}",
        flush=True,
    )
    try:
        empty_bytes = sqlite_stored_bytes(work)
        empty_file_bytes = sqlite_file_bytes(work)
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            before = server.span_count(http)
            target = before + spans
            cpu_before = server.cpu_seconds
            started = time.perf_counter()
            retries = send_all(server.base_url, bodies, senders=SENDERS)
            sent = time.perf_counter() - started
            deadline = started + max(300.0, spans / 5)
            count = server.span_count(http)
            while count < target:
                if server.proc.poll() is not None:
                    raise RuntimeError(f"phoenix exited; log tail:\n{server.log_tail()}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"only {count - before} of {spans} spans queryable; giving up")
                time.sleep(POLL_S)
                count = server.span_count(http)
            elapsed = time.perf_counter() - started
            cpu = server.cpu_seconds - cpu_before
    finally:
        server.stop()
    stored = sqlite_stored_bytes(work) - empty_bytes
    on_disk = sqlite_file_bytes(work) - empty_file_bytes
    print(
        f"phoenix: sent in {sent:.2f} s, all {count - before} queryable after {elapsed:.2f} s "
        f"({retries} 429/503 retries); CPU {cpu:.2f} s; stored +{stored:,} B in use "
        f"(+{on_disk:,} B of files)",
        flush=True,
    )
    return {
        "spans_per_s": spans / elapsed,
        "cpu_ms_per_span": cpu * 1000 / spans,
        "bytes_per_span": stored / spans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--workdir", default=None, help="Phoenix working dir (default: a new temp dir)")
    args = parser.parse_args()

    workdir = args.workdir or tempfile.mkdtemp(prefix="ph-bench-phoenix-")
    bodies = build_bodies(args.spans, args.batch)
    total = len(bodies) * args.batch
    print(
        f"payload: {total} spans in {len(bodies)} requests, "
        f"{sum(map(len, bodies)) / total:.0f} wire bytes/span"
    )
    result = measure_phoenix(bodies, total, workdir)
    print(f"{'metric':28} {'phoenix ' + PHOENIX_VERSION:>16}")
    print(f"{'spans/s end to end':28} {result['spans_per_s']:16,.1f}")
    print(f"{'server CPU ms/span':28} {result['cpu_ms_per_span']:16.2f}")
    print(f"{'stored bytes/span':28} {result['bytes_per_span']:16,.0f}")
    print(f"working dir: {workdir}  cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
