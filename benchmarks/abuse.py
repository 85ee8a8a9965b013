"""Abuse benchmark (issue 21, classes 1-4): peak RSS and /health latency while each attack runs.

    python benchmarks/abuse.py [--seconds 5] [--senders 4] [--uploaders 32] [--only TEXT] [--postgres]
                               [--database-url URL]

Starts ``pilothouse serve`` (SQLite in a temporary folder; --postgres: a new PostgreSQL database on
127.0.0.1:5432), then runs, one after another, each for --seconds with --senders clients:

- baseline: nothing but the /health probe;
- gzip bomb: 256 KiB gzip bodies that expand to 256 MiB (refused at the 64 MiB decompressed cap);
- amplification: gzip exports of 20 spans with 10,000 attributes each (200,000 values), protobuf and
  OTLP/JSON in turn, and OTLP/JSON of one span of 5,000 (decoded in a thread, just under the worker's
  threshold); 128 attributes per span are kept;
- label cardinality: gateway calls naming a new 100 KB model each, and /metrics scraped meanwhile;
- poison: 100-byte exports of a span that starts at 2^64-1 ns, while another tenant ingests valid spans;
- large uploads: --uploaders (32) clients each sending 16 MiB protobuf exports (one span, a 16 MiB
  bytes attribute) at once, with the server's body budget (``max_inflight_body_bytes``, 64 MiB; a
  request waits in line for room up to ``body_wait_seconds``, and large bodies are read at
  ``large_body_bytes_per_second``), then two reference rows outside the targets: the budget as it
  was before (refused at once, no pace: ``body_wait_seconds=0``, ``large_body_bytes_per_second=0``)
  and the budget turned off (what it bounds).

Each attack (and the baseline, measured in the same run) runs against a new server process on the
same database, so that one attack's heap does not count in the next one's figures. A probe, in a
process of its own (the attackers' threads would slow its client), asks for /health every 5 ms
throughout. Prints, per attack, the peak RSS of the server and of its JSON worker
process when one ran (VmHWM from /proc, summed: an upper bound of what they held at once), /health
p50 and p99, and what the attackers got (status counts). Targets: peak RSS <= 400 MiB and /health
p99 <= 50 ms during every attack; then the large uploads' peak RSS against the baseline's, and the
load average. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import Server, build_bodies, create_key, export_body, kv
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_RSS_MIB, TARGET_P99_MS = 400, 50


def _hwm_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakRss:
    """The peak RSS of a process and of every child it had meanwhile (sampled: a child may end)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.children: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                    pids = [int(p) for p in f.read().split()]
            except OSError:
                pids = []
            for child in pids:
                self.children[child] = max(self.children.get(child, 0.0), _hwm_mib(child))
            time.sleep(0.05)

    def stop(self) -> tuple[float, float]:
        """(the server's peak, the children's peaks summed), in MiB."""
        self._stop.set()
        self._thread.join()
        return _hwm_mib(self.pid), sum(self.children.values())


def gzip_bomb(decompressed: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    zeros = b"\0" * (1 << 20)
    parts = [packer.compress(zeros) for _ in range(decompressed >> 20)]
    return b"".join(parts) + packer.flush()


def amplified(json_body: bool, spans_n: int = 20, attributes: int = 10_000) -> bytes:
    spans = []
    for i in range(spans_n):
        span = Span(
            trace_id=uuid.uuid4().bytes,
            span_id=os.urandom(8),
            name=f"amplified {i}",
            start_time_unix_nano=time.time_ns(),
            end_time_unix_nano=time.time_ns() + 1000,
        )
        span.attributes.extend(kv(f"a{j}", j) for j in range(attributes))
        spans.append(span)
    if not json_body:
        return gzip.compress(export_body(spans))
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": s.trace_id.hex(),
                                "spanId": s.span_id.hex(),
                                "name": s.name,
                                "startTimeUnixNano": str(s.start_time_unix_nano),
                                "endTimeUnixNano": str(s.end_time_unix_nano),
                                "attributes": [
                                    {"key": f"a{j}", "value": {"intValue": str(j)}} for j in range(attributes)
                                ],
                            }
                            for s in spans
                        ]
                    }
                ]
            }
        ]
    }
    return gzip.compress(json.dumps(doc).encode())


MAX_BODY_BYTES = 16 * 1024 * 1024  # max_body_bytes' default


def large_upload() -> bytes:
    """A valid export of one span carrying a random (incompressible) bytes attribute, just under the
    16 MiB body limit."""
    blob = KeyValue(key="blob", value=AnyValue(bytes_value=os.urandom(MAX_BODY_BYTES - 1024)))
    span = Span(
        trace_id=uuid.uuid4().bytes,
        span_id=os.urandom(8),
        name="large",
        start_time_unix_nano=time.time_ns(),
        end_time_unix_nano=time.time_ns() + 1000,
        attributes=[blob],
    )
    body = export_body([span])
    assert len(body) <= MAX_BODY_BYTES
    return body


def poison() -> bytes:
    span = Span(trace_id=uuid.uuid4().bytes, span_id=os.urandom(8), name="p", start_time_unix_nano=2**64 - 1)
    return export_body([span])


def _probe(base_url: str, stop: Any, out: Any) -> None:
    """Time /health every 5 ms until ``stop`` is set, then put the latencies (ms) on ``out``. Runs in
    a process of its own: the attackers' threads must not slow the probe's own client down."""
    latencies: list[float] = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        http.get("/health").raise_for_status()  # connected: the attack may start
        out.put("ready")
        while not stop.is_set():
            started = time.perf_counter()
            http.get("/health").raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.005)
    out.put(latencies)


class Run:
    """One attack: senders call ``attack(client)`` in a loop while the probe (another process)
    times /health."""

    def __init__(self, base_url: str, seconds: float) -> None:
        self.base_url, self.seconds = base_url, seconds

    def __call__(
        self, senders: list[Callable[[httpx.Client], int]]
    ) -> tuple[list[float], collections.Counter[str]]:
        stop = threading.Event()
        statuses: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()
        spawn = multiprocessing.get_context("spawn")
        probe_stop, results = spawn.Event(), spawn.Queue()
        prober = spawn.Process(target=_probe, args=(self.base_url, probe_stop, results))
        prober.start()
        assert results.get(timeout=60) == "ready"

        def send(attack: Callable[[httpx.Client], int]) -> None:
            with httpx.Client(base_url=self.base_url, timeout=60) as http:
                while not stop.is_set():
                    try:
                        status = str(attack(http))
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    with lock:
                        statuses[status] += 1

        threads = [threading.Thread(target=send, args=(a,)) for a in senders]
        for t in threads:
            t.start()
        time.sleep(self.seconds)
        stop.set()
        probe_stop.set()
        latencies: list[float] = results.get(timeout=120)
        prober.join()
        for t in threads:
            t.join()
        return latencies, statuses


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--uploaders", type=int, default=32, help="clients of the large-uploads attack")
    parser.add_argument(
        "--only", default=None, help="run the attacks whose name has this text (and the baseline)"
    )
    parser.add_argument("--postgres", action="store_true", help="a new PostgreSQL database, not SQLite")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pilothouse-abuse-"))
    url = args.database_url or f"sqlite:///{tmp / 'abuse.db'}"
    if args.postgres and not args.database_url:
        import psycopg

        name = f"abuse_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    key = create_key(url)
    other = create_key(url)
    auth = {"Authorization": f"Bearer {key}"}
    print("building payloads ...", flush=True)
    bomb = gzip_bomb(256 << 20)
    amplified_pb, amplified_json = amplified(False), amplified(True)
    amplified_small_json = amplified(True, 1, 5_000)  # ~240 KiB: just under the worker's 256 KiB
    valid = build_bodies(20_000, 100, seed=5)
    poisoned = poison()
    large = large_upload()
    sizes = f"{len(amplified_pb) >> 10} KiB (protobuf), {len(amplified_json) >> 10} KiB (JSON)"
    print(f"gzip bomb {len(bomb) >> 10} KiB -> 256 MiB; amplification {sizes}; poison {len(poisoned)} bytes")
    gz = {**auth, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    gz_json = {**auth, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    pb = {**auth, "Content-Type": "application/x-protobuf"}
    other_pb = {"Authorization": f"Bearer {other}", "Content-Type": "application/x-protobuf"}
    counter = iter(range(10**9))

    def send_bomb(http: httpx.Client) -> int:
        return http.post("/v1/traces", content=bomb, headers=gz).status_code

    def send_amplified(http: httpx.Client) -> int:
        turn = next(counter) % 3
        if turn == 1:
            return http.post("/v1/traces", content=amplified_json, headers=gz_json).status_code
        if turn == 2:
            return http.post("/v1/traces", content=amplified_small_json, headers=gz_json).status_code
        return http.post("/v1/traces", content=amplified_pb, headers=gz).status_code

    padding = b"m" * 100_000
    chat = {**auth, "Content-Type": "application/json"}

    def send_model_name(http: httpx.Client) -> int:
        # bytes put together, not json.dumps: the benchmark's own CPU competes with the server's
        body = (
            b'{"model": "'
            + uuid.uuid4().hex.encode()
            + padding
            + b'", "messages": [{"role": "user", "content": "hi"}]}'
        )
        return http.post("/v1/chat/completions", content=body, headers=chat).status_code

    def scrape(http: httpx.Client) -> int:
        return http.get("/metrics").status_code

    def send_poison(http: httpx.Client) -> int:
        return http.post("/v1/traces", content=poisoned, headers=pb).status_code

    def send_large(http: httpx.Client) -> int:
        return http.post("/v1/traces", content=large, headers=pb).status_code

    def other_tenant(http: httpx.Client) -> int:
        return http.post(
            "/v1/traces", content=valid[next(counter) % len(valid)], headers=other_pb
        ).status_code

    no_budget = {"PILOTHOUSE_MAX_INFLIGHT_BODY_BYTES": str(1 << 40)}
    # what the budget did before requests waited in line and large bodies were paced
    refused_unpaced = {"PILOTHOUSE_BODY_WAIT_SECONDS": "0", "PILOTHOUSE_LARGE_BODY_BYTES_PER_SECOND": "0"}
    uploads = f"{args.uploaders} x 16 MiB uploads"
    attacks: list[tuple[str, list[Callable[[httpx.Client], int]], dict[str, str] | None]] = [
        ("baseline (no attack)", [], None),
        ("gzip bomb", [send_bomb] * args.senders, None),
        ("amplification", [send_amplified] * args.senders, None),
        ("label cardinality", [send_model_name] * args.senders + [scrape], None),
        ("poison records", [send_poison] * args.senders + [other_tenant], None),
        (uploads, [send_large] * args.uploaders, None),
        (f"{uploads}, refused at once, unpaced", [send_large] * args.uploaders, refused_unpaced),  # reference
        (f"{uploads}, no budget", [send_large] * args.uploaders, no_budget),  # reference only
        ("baseline again", [], None),
    ]
    if args.only:
        attacks = [a for a in attacks if "baseline" in a[0] or args.only in a[0]]
    db = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    rows = []
    metrics = ""
    for name, senders, env in attacks:
        with Server(url, env=env) as server:
            peak = PeakRss(server.pid)
            latencies, statuses = Run(server.base_url, args.seconds)(senders)
            if name == "label cardinality":
                metrics = httpx.get(server.base_url + "/metrics").text
            own, children = peak.stop()
        rss = own + children
        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        reference = env is not None  # the budget turned off: shows what it bounds, not a target
        ok = reference or (rss <= TARGET_RSS_MIB and p99 <= TARGET_P99_MS)
        rows.append((name, rss, p50, p99, len(latencies), dict(statuses), ok))
        worker = f" (server {own:.0f} + JSON worker {children:.0f})" if children else ""
        print(
            f"{name:22} peak RSS {rss:4.0f} MiB{worker}  /health p50 {p50:5.1f} ms  p99 {p99:6.1f} ms "
            f"({len(latencies)} probes)  attackers got {dict(sorted(statuses.items()))}  "
            f"{'reference' if reference else 'ok' if ok else 'OVER TARGET'}",
            flush=True,
        )
    if args.postgres and not args.database_url:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]}")
    baseline = rows[0][1]
    print(f"\n{db}; targets: peak RSS <= {TARGET_RSS_MIB} MiB, /health p99 <= {TARGET_P99_MS} ms")
    for name, rss, *_ in rows:
        if "uploads" in name:
            print(
                f"{name}: peak RSS {rss:.0f} MiB, {rss - baseline:+.0f} MiB against the baseline's "
                f"{baseline:.0f} MiB"
            )
    print(f"load average (1, 5, 15 min) at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"/metrics is {len(metrics):,} bytes after the label attack")
    print("all within targets" if all(r[-1] for r in rows) else "SOME OVER TARGET")


if __name__ == "__main__":
    main()
