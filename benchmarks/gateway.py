"""Gateway benchmark: OpenAI-compatible chat completions through `pilothouse serve` on loopback.

    python benchmarks/gateway.py [--duration 10] [--connections 16] [--latency-requests 5000]
                                 [--starts 3] [--baseline litellm|none] [--py-spy PATH] [--priced]

The simulated upstream (pilothouse.testing.SimulatedUpstream, 0 ms) runs as its own process pinned to
CPU 1, the load generator (wrk with a Lua script; this script's own latency client) on CPU 1 too, and
the gateway on CPU 0. Measures: req/s at --connections with non-stream chat completions (small
prompt); added latency at 1 connection (p50 and p99 through the gateway less the same percentiles
calling the upstream directly, requests alternating); RSS of the gateway after the load; time from
process start to the first 200 from its health endpoint (--starts starts); and that every call that
got a 200 was traced (stored traces counted through GET /api/traces pages and /api/metrics/models).
Baseline in the same run: LiteLLM proxy 1.108.7 measured the same way (benchmarks/baseline_litellm.py;
it installs LiteLLM into /tmp/litellm-venv on first use). --baseline none, or a LiteLLM that cannot be
installed or run, uses the issue's figures (62-77 req/s, +14.6 ms p50 / +24.9 ms p99, 345 MiB, 7 s).
Targets: >= 3,000 req/s at 16 connections; added latency <= 0.5 ms p50 and <= 2 ms p99; RSS <= 150
MiB; ready <= 1.5 s. The floor under the added latency is measured too: a null relay (socat on the
gateway's core, if installed: apt-get install -y socat) pays the same two extra hops between the cores
and does nothing else; and the benchmark warns when other processes used the CPUs during the
1-connection test (their work lands in the tail: every figure assumes a quiet machine).
--py-spy PATH (a py-spy binary) then profiles the gateway under the same load and prints the top frames.
"""

from __future__ import annotations

import argparse
import collections
import gc
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import BIN, CLK_TCK, cpu_seconds, create_key

from pilothouse.testing import free_port

GATEWAY_CPU = "0"
LOAD_CPU = "1"  # the upstream, wrk, this script
MODEL = "bench-model"
LITELLM_REFERENCE = {
    "rps": (62 + 77) / 2,
    "added_p50_ms": 14.6,
    "added_p99_ms": 24.9,
    "rss_mib": 345.0,
    "cpu_ms_per_req": float("nan"),  # not in the issue
    "ready_s": 7.0,
}
UPSTREAM_CODE = """
import sys, time
from pilothouse.testing import SimConfig, SimulatedUpstream
SimulatedUpstream(SimConfig(latency_ms=0), port=int(sys.argv[1])).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def chat_body(model: str) -> bytes:
    """A small non-stream chat completion request."""
    request = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the benchmark in a few words."}],
        "max_tokens": 16,
    }
    return json.dumps(request, separators=(",", ":")).encode()


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its live descendants, in MiB."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children[ppid].append(int(entry.name))
    total_kib = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, ()))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def http_ok(port: int, path: str) -> bool:
    """Whether GET ``path`` on 127.0.0.1:``port`` answers 200 right now."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class Served:
    """A server process started from ``command``; returns once ``health_path`` answers 200 and keeps
    how long that took from just before the process was created (``ready_s``, polled every 5 ms)."""

    def __init__(
        self,
        command: Sequence[str],
        port: int,
        health_path: str,
        *,
        name: str,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.name, self.port = name, port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        log = log_path.open("wb") if log_path else subprocess.DEVNULL
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            list(command),
            env=env if env is not None else dict(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if log_path:
            log.close()  # type: ignore[union-attr]
        deadline = started + start_timeout_s
        while not http_ok(port, health_path):
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start; log tail:\n{self.log_tail()}")
            time.sleep(0.005)
        self.ready_s = time.perf_counter() - started

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def start_upstream(workdir: Path) -> Served:
    """SimulatedUpstream (0 ms) in its own process on LOAD_CPU."""
    port = free_port()
    return Served(
        ["taskset", "-c", LOAD_CPU, sys.executable, "-c", UPSTREAM_CODE, str(port)],
        port,
        "/v1/models",
        name="simulated upstream",
        log_path=workdir / "upstream.log",
    )


LUA = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
%(auth)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
ok = 0
bad = 0
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    "RESULT ok=%%d bad=%%d requests=%%d duration_us=%%d socket_errors=%%d p50_us=%%d p99_us=%%d\\n",
    o, b, summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str, body: bytes, token: str | None, connections: int, duration_s: float, workdir: Path
) -> dict[str, float]:
    """wrk on LOAD_CPU (one thread) POSTing ``body`` to ``url`` for ``duration_s``: req/s, the 200s and
    other responses it read, socket errors and its latency percentiles."""
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    script = workdir / "post.lua"
    script.write_text(LUA % {"body": body.decode(), "auth": auth})
    out = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration_s:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    fields = {k: float(v) for k, v in (item.split("=") for item in line.split()[1:])}
    fields["rps"] = fields["requests"] / (fields["duration_us"] / 1e6)
    return fields


def measured_load(
    server: Served, url: str, body: bytes, token: str, args: argparse.Namespace, workdir: Path
) -> dict[str, float]:
    """The timed wrk run, with the server's CPU time per request and its share of its core; printed."""
    cpu_before, wall_before = cpu_seconds(server.pid), time.perf_counter()
    load = run_wrk(url, body, token, args.connections, args.duration, workdir)
    cpu = cpu_seconds(server.pid) - cpu_before
    load["cpu_ms_per_req"] = cpu * 1000 / max(1.0, load["requests"])
    load["core_share"] = cpu / (time.perf_counter() - wall_before)
    print(
        f"{server.name}: {load['rps']:,.0f} req/s at {args.connections} connections "
        f"({int(load['ok'])} 200s, {int(load['bad'])} others, {int(load['socket_errors'])} socket errors; "
        f"wrk p50 {load['p50_us'] / 1000:.2f} ms, p99 {load['p99_us'] / 1000:.2f} ms); "
        f"server CPU {load['cpu_ms_per_req']:.2f} ms/request, {100 * load['core_share']:.0f}% of its core",
        flush=True,
    )
    return load


def wait_quiet(pid: int, timeout_s: float = 60.0, window_s: float = 0.5, share: float = 0.05) -> float:
    """Wait until the server has finished the work the load left behind (for Pilothouse, storing the
    traces of the load; for any gateway, its background tasks): until it uses under ``share`` of a
    core over ``window_s``. The seconds waited. Latency at 1 connection is measured from there, so it
    is the steady state at 1 connection, not the tail of the previous load."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        before = cpu_seconds(pid)
        time.sleep(window_s)
        if cpu_seconds(pid) - before < share * window_s:
            break
    return time.perf_counter() - started


def latency_pairs(
    gateway_port: int,
    gateway_path: str,
    gateway_headers: dict[str, str],
    upstream_port: int,
    requests: int,
    warmup: int = 200,
) -> dict[str, float]:
    """``requests`` calls through the gateway and as many straight to the upstream, alternating, one
    at a time on two keep-alive connections (stdlib client, GC off); percentiles in ms, and the 200s
    the gateway gave."""
    gw_body = chat_body(MODEL)
    up_body = chat_body("sim")
    gw = http.client.HTTPConnection("127.0.0.1", gateway_port, timeout=30)
    up = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
    gw_headers = {"Content-Type": "application/json", **gateway_headers}
    up_headers = {"Content-Type": "application/json"}
    gw_ms: list[float] = []
    up_ms: list[float] = []
    gateway_ok = 0
    clock = time.perf_counter_ns

    def call(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]) -> int:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    gc.disable()
    try:
        for i in range(warmup + requests):
            t0 = clock()
            status = call(gw, gateway_path, gw_body, gw_headers)
            t1 = clock()
            if status != 200:
                raise RuntimeError(f"gateway answered {status}")
            gateway_ok += 1
            if call(up, "/v1/chat/completions", up_body, up_headers) != 200:
                raise RuntimeError("upstream failed")
            t2 = clock()
            if i >= warmup:
                gw_ms.append((t1 - t0) / 1e6)
                up_ms.append((t2 - t1) / 1e6)
            if i % 500 == 0:
                gc.collect()
    finally:
        gc.enable()
        gw.close()
        up.close()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    result: dict[str, float] = {"gateway_ok": gateway_ok}
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        result[f"gateway_{label}_ms"] = pct(gw_ms, q)
        result[f"direct_{label}_ms"] = pct(up_ms, q)
        result[f"added_{label}_ms"] = pct(gw_ms, q) - pct(up_ms, q)
    return result


def busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK  # less idle and iowait


def others_share(started_busy: float, started_own: float, pids: Sequence[int], wall_s: float) -> float:
    """Share of a core used by processes other than ``pids`` since ``busy_seconds()`` and their
    ``cpu_seconds`` were ``started_busy`` and ``started_own``. Other work on either core shows up in
    the latency tail: a pinned process then shares its core."""
    own = sum(cpu_seconds(pid) for pid in pids) - started_own
    return max(0.0, busy_seconds() - started_busy - own) / wall_s


def relay_floor(upstream: Served, requests: int, workdir: Path) -> dict[str, float] | None:
    """Added latency of a null relay: socat on the gateway's core forwarding bytes to the upstream,
    measured like the gateway (1 connection, alternating with direct calls). What any proxy on that
    core pays for the extra hops between the two cores (on a VM, waking the other vCPU), before doing
    any work of its own; None without socat."""
    if shutil.which("socat") is None:
        return None
    port = free_port()
    relay = subprocess.Popen(
        ["taskset", "-c", GATEWAY_CPU, "socat", f"TCP-LISTEN:{port},fork,reuseaddr,nodelay",
         f"TCP:127.0.0.1:{upstream.port},nodelay"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not http_ok(port, "/v1/models"):
            if relay.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        return latency_pairs(port, "/v1/chat/completions", {}, upstream.port, requests)
    finally:
        relay.kill()
        relay.wait()


def start_many(starter: Callable[[], Served], starts: int) -> tuple[Served, list[float]]:
    """Start ``starts`` times (stopping all but the last); the last server and every ready time."""
    times: list[float] = []
    server = None
    for i in range(starts):
        server = starter()
        times.append(server.ready_s)
        if i < starts - 1:
            server.stop()
    assert server is not None
    return server, times


def gateway_config(path: Path, upstream_url: str, priced: bool = False) -> None:
    """The gateway's config; ``priced`` gives the model a price (each call priced, its cost in the
    header and on its span)."""
    price = "    price: {input: 0.15, output: 0.6}\n" if priced else ""
    path.write_text(
        "models:\n"
        f"  - name: {MODEL}\n"
        "    provider: openai\n"
        "    model: sim\n"
        f"    base_url: {upstream_url}/v1\n"
        "    api_key: sk-upstream\n" + price
    )


def gateway_200s(base_url: str) -> int:
    """200 answers the gateway counted (Prometheus ``pilothouse_gateway_requests_total``)."""
    total = 0
    for line in httpx.get(base_url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("pilothouse_gateway_requests_total{") and 'status="200"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def stored_counts(base_url: str, headers: dict[str, str]) -> tuple[int, int]:
    """(model calls, errors) summed over /api/metrics/models for the last 2 h."""
    data = httpx.get(
        base_url + "/api/metrics/models",
        params={"from": "2h", "granularity": "day"},
        headers=headers,
        timeout=60,
    ).json()["data"]
    return sum(r["count"] for r in data), sum(r["errors"] for r in data)


def count_traces(base_url: str, headers: dict[str, str]) -> int:
    """Stored traces, counted page by page through GET /api/traces."""
    total = 0
    cursor = None
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            r = http.get("/api/traces", params=params)
            r.raise_for_status()
            page = r.json()
            total += len(page["data"])
            cursor = page.get("next")
            if not cursor:
                return total


def profile(
    py_spy: str, server: Served, url: str, body: bytes, token: str, args: argparse.Namespace, workdir: Path
) -> None:
    """py-spy (non-blocking, 200 Hz) on the gateway under the same load; prints the top frames."""
    raw = workdir / "gateway.pyspy.txt"
    spy = subprocess.Popen(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            py_spy,
            "record",
            "--pid",
            str(server.pid),
            "--rate",
            "200",
            "--duration",
            f"{args.duration:g}",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    load = run_wrk(url, body, token, args.connections, args.duration - 1, workdir)
    spy.wait(60)
    print(f"profile: {load['rps']:,.0f} req/s under py-spy; stacks in {raw}")
    self_count: collections.Counter[str] = collections.Counter()
    incl_count: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        self_count[frames[-1]] += count
        for frame in set(frames):
            incl_count[frame] += count
    if not total:
        print("profile: no samples")
        return
    print(f"profile: {total} samples; top frames by own time:")
    for frame, n in self_count.most_common(25):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("profile: top frames by inclusive time:")
    for frame, n in incl_count.most_common(40):
        print(f"  {100 * n / total:5.1f}%  {frame}")


def measure_pilothouse(
    upstream: Served, args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, float], dict[str, int]]:
    """The gateway's figures, and the trace check's counts."""
    url = f"sqlite:///{workdir}/gateway.db"
    key = create_key(url)
    config = workdir / "gateway.yaml"
    gateway_config(config, upstream.base_url, args.priced)
    headers = {"Authorization": f"Bearer {key}"}

    def starter() -> Served:
        port = free_port()
        command = [
            "taskset", "-c", GATEWAY_CPU, str(BIN), "serve", "--config", str(config), "--port", str(port),
            "--database-url", url, "--log-level", "warning",
        ]  # fmt: skip
        return Served(command, port, "/health", name="pilothouse", log_path=workdir / "pilothouse.log")

    server, ready = start_many(starter, args.starts)
    print(f"pilothouse: ready after {', '.join(f'{t:.2f}' for t in ready)} s", flush=True)
    body = chat_body(MODEL)
    target = server.base_url + "/v1/chat/completions"
    try:
        client_ok = 0
        warm = run_wrk(target, body, key, args.connections, 2, workdir)
        load = measured_load(server, target, body, key, args, workdir)
        client_ok += int(warm["ok"] + load["ok"])
        settled = wait_quiet(server.pid)
        print(f"pilothouse: quiet {settled:.1f} s after the load (its traces stored)", flush=True)
        pids = (server.pid, upstream.pid, os.getpid())
        busy0, own0, t0 = busy_seconds(), sum(cpu_seconds(p) for p in pids), time.perf_counter()
        lat = latency_pairs(
            server.port, "/v1/chat/completions", headers, upstream.port, args.latency_requests
        )
        others = others_share(busy0, own0, pids, time.perf_counter() - t0)
        if others > 0.05:
            print(f"warning: other processes used {others:.0%} of a core during the 1-connection test")
        client_ok += int(lat["gateway_ok"])
        print(
            f"pilothouse: 1 connection: gateway p50 {lat['gateway_p50_ms']:.3f} / p99 "
            f"{lat['gateway_p99_ms']:.3f} ms, direct p50 {lat['direct_p50_ms']:.3f} / p99 "
            f"{lat['direct_p99_ms']:.3f} ms",
            flush=True,
        )
        rss = rss_mib(server.pid)
        # Every 200 the gateway gave must become a stored trace: wait for the batch writer.
        answered = gateway_200s(server.base_url)
        deadline = time.monotonic() + 60
        calls, errors = stored_counts(server.base_url, headers)
        while calls < answered and time.monotonic() < deadline:
            time.sleep(0.2)
            calls, errors = stored_counts(server.base_url, headers)
        traces = count_traces(server.base_url, headers)
        check = {
            "traces": traces,
            "calls": calls,
            "errors": errors,
            "gateway_200": answered,
            "client_200": client_ok,
            "in_flight": answered - client_ok,
        }
        if args.py_spy:
            profile(args.py_spy, server, target, body, key, args, workdir)
    finally:
        server.stop()
    figures = {
        "rps": load["rps"],
        "added_p50_ms": lat["added_p50_ms"],
        "added_p99_ms": lat["added_p99_ms"],
        "rss_mib": rss,
        "cpu_ms_per_req": load["cpu_ms_per_req"],
        "ready_s": statistics.median(ready),
        "ready_max_s": max(ready),
    }
    return figures, check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per throughput run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--latency-requests", type=int, default=5000, help="requests per path at 1 connection"
    )
    parser.add_argument("--starts", type=int, default=3, help="process starts timed for the ready figure")
    parser.add_argument("--baseline", choices=("litellm", "none"), default="litellm")
    parser.add_argument("--py-spy", default=None, help="py-spy binary: profile the gateway under load")
    parser.add_argument("--priced", action="store_true", help="give the model a price (each call priced)")
    args = parser.parse_args()

    if not wrk_available():
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 CPUs: the gateway on CPU 0, upstream and load generator on CPU 1")
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # this script's latency client too
    busy0, t0 = busy_seconds(), time.perf_counter()
    time.sleep(1)
    if (busy := others_share(busy0, 0.0, (), time.perf_counter() - t0)) > 0.05:
        print(f"warning: the machine was busy before the start ({busy:.0%} of a core): latency will be noisy")
    workdir = Path(tempfile.mkdtemp(prefix="ph-bench-gateway-"))
    upstream = start_upstream(workdir)
    try:
        alone = run_wrk(upstream.base_url + "/v1/chat/completions", chat_body("sim"), None, 16, 3, workdir)
        print(f"upstream alone: {alone['rps']:,.0f} req/s at 16 connections (its ceiling here)", flush=True)
        ours, check = measure_pilothouse(upstream, args, workdir)
        relay = relay_floor(upstream, args.latency_requests, workdir)
        litellm, source = LITELLM_REFERENCE, "the issue's reference figures, not measured now"
        if args.baseline == "litellm":
            try:
                from baseline_litellm import measure_litellm

                litellm = measure_litellm(upstream, args, workdir)
                source = "measured now, same load"
            except Exception as exc:  # any failure falls back to the figures
                print(f"litellm: could not be measured ({type(exc).__name__}: {str(exc)[:2000]})")
                print("litellm: falling back to the issue's reference figures")
    finally:
        upstream.stop()

    print(f"load generator: wrk (1 thread, CPU {LOAD_CPU}) + stdlib http.client for 1 connection")
    print(f"baseline: LiteLLM proxy 1.108.7 ({source})")
    rows = [
        (f"req/s at {args.connections} connections", "rps", ",.0f", ">= 3,000", True),
        ("added latency p50 (ms)", "added_p50_ms", ".3f", "<= 0.5", False),
        ("added latency p99 (ms)", "added_p99_ms", ".3f", "<= 2", False),
        ("gateway RSS after load (MiB)", "rss_mib", ".1f", "<= 150", False),
        ("ready after start (s, median)", "ready_s", ".2f", "<= 1.5", False),
        ("server CPU ms/request (16 conn.)", "cpu_ms_per_req", ".2f", "-", False),
    ]
    limits = {"rps": 3000, "added_p50_ms": 0.5, "added_p99_ms": 2, "rss_mib": 150, "ready_s": 1.5}
    print(f"{'metric':32} {'pilothouse':>11} {'litellm':>9} {'ratio':>7} {'target':>9}  met")
    for label, key, fmt, target, higher in rows:
        a, b = ours[key], litellm[key]
        ratio = (a / b if higher else b / a) if a > 0 and b > 0 else float("nan")
        met = key not in limits or (a >= limits[key] if higher else a <= limits[key])
        print(
            f"{label:32} {format(a, fmt):>11} {format(b, fmt):>9} {ratio:6.1f}x {target:>9}  "
            f"{('yes' if met else 'NO') if key in limits else ''}"
        )
    if relay is None:
        print("null relay: not measured (apt-get install -y socat)")
    else:
        print(
            f"null relay (socat on CPU {GATEWAY_CPU}): added p50 {relay['added_p50_ms']:.3f} / p99 "
            f"{relay['added_p99_ms']:.3f} ms, the floor of the two extra cross-core hops; pilothouse "
            f"above it: p50 {ours['added_p50_ms'] - relay['added_p50_ms']:+.3f} / p99 "
            f"{ours['added_p99_ms'] - relay['added_p99_ms']:+.3f} ms"
        )
    if "ready_max_s" in litellm:
        print(
            f"ready, slowest of {args.starts}: pilothouse {ours['ready_max_s']:.2f} s, litellm "
            f"{litellm['ready_max_s']:.2f} s"
        )
    traced = check["traces"] == check["gateway_200"] == check["calls"] and check["errors"] == 0
    traced = traced and 0 <= check["in_flight"] <= 2 * args.connections  # two wrk runs end mid-flight
    print(
        f"traced: {check['traces']:,} traces via /api/traces, {check['calls']:,} calls "
        f"({check['errors']} errors) via /api/metrics/models; the gateway answered "
        f"{check['gateway_200']:,} 200s, clients read {check['client_200']:,} "
        f"({check['in_flight']} in flight when the 2 wrk runs stopped): "
        f"{'every 200 traced' if traced else 'MISMATCH'}"
    )
    print(f"cores: {os.cpu_count()}  work dir: {workdir}")


if __name__ == "__main__":
    main()
