"""Gateway throughput with one and with N worker processes, in one run:

    python benchmarks/gateway_workers.py [--workers 2] [--rounds 3] [--duration 8] [--connections 16]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--redis redis://127.0.0.1:6379/0]

`pilothouse serve` on PostgreSQL and Redis (a new database per run, created on the server of
--database-url; `--database-url sqlite`: a new SQLite file per run, where the workers hand their
spans to the one span writer process), the in-process `sim` model (0 ms), every call traced; wrk
(one thread, on CPU 1) POSTs small non-stream chat completions at --connections for --duration
seconds. `--workers 1` and `--workers N` alternate for --rounds rounds. Prints req/s per setting,
the ratio round by round and the load average. Target of issue 26: N=2 at >= 1.8x one worker. On a
machine whose cores other work uses (and where wrk itself takes a core) the ratio shows that
machine, not the gateway.

Then (`--baseline litellm`, the default; `none` skips it) both gateways with N workers in front of the
same HTTP upstream (benchmarks/gateway.py's simulated one, 0 ms, on CPU 1 with wrk): `pilothouse
serve --workers N` on the same store and LiteLLM proxy 1.108.7 with `--num_workers N` (installed into
/tmp/litellm-venv on first use), each loaded at --connections, then its added latency at 1 connection
(--latency-requests calls through the gateway and as many straight to the upstream, alternating).
Issue 26: >= 100x LiteLLM's req/s, added p50 <= 0.5 ms.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import Server, create_key
from ingest_pg import _drop_database, _new_database, postgres_cpu_seconds, tree_cpu_seconds

from gateway import MODEL, chat_body, gateway_config, latency_pairs, run_wrk, start_upstream, wrk_available


def one_run(args: argparse.Namespace, workers: int) -> float:
    """req/s of one server with ``workers`` processes, on a new database."""
    sqlite = args.database_url.startswith("sqlite")
    folder = Path(tempfile.mkdtemp(prefix="ph-bench-workers-"))
    url = f"sqlite:///{folder}/gateway.db" if sqlite else _new_database(args.database_url)
    config = folder / "sim.yaml"
    config.write_text("models:\n  - name: sim\n    provider: sim\n")
    env = _server_env(args, folder, config, workers)
    try:
        key = create_key(url)
        server = Server(url, env=env)
        try:
            body = chat_body("sim")
            run_wrk(server.base_url + "/v1/chat/completions", body, key, args.connections, 2, folder)  # warm
            before, started = cpu_snapshot(server.pid, args.database_url, url), time.monotonic()
            load = run_wrk(
                server.base_url + "/v1/chat/completions", body, key, args.connections, args.duration, folder
            )
            after, elapsed = cpu_snapshot(server.pid, args.database_url, url), time.monotonic() - started
            used = {k: (v - before[k]) / elapsed for k, v in after.items()}
        finally:
            server.stop()
    finally:
        if not sqlite:
            _drop_database(args.database_url, url)
    print(
        f"--workers {workers}: {load['rps']:,.0f} req/s ({int(load['ok'])} 200s, {int(load['bad'])} others; "
        f"wrk p50 {load['p50_us'] / 1000:.2f} ms, p99 {load['p99_us'] / 1000:.2f} ms)",
        flush=True,
    )
    print(
        "  cores used while timed: "
        + ", ".join(f"{name} {value:.2f}" for name, value in used.items())
        + f"; Pilothouse CPU ms/request {1000 * used['pilothouse'] / max(load['rps'], 1):.3f}",
        flush=True,
    )
    CORES.setdefault(workers, []).append(used)
    return float(load["rps"])


CORES: dict[int, list[dict[str, float]]] = {}


def _server_env(args: argparse.Namespace, folder: Path, config: Path, workers: int) -> dict[str, str]:
    return {
        "PILOTHOUSE_HOME": str(folder),
        "PILOTHOUSE_CONFIG": str(config),
        "PILOTHOUSE_REDIS_URL": args.redis,
        "PILOTHOUSE_WORKERS": str(workers),
    }


def pilothouse_over_http(upstream: Any, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """``serve --workers N`` in front of ``upstream``: req/s at --connections, added latency at 1."""
    sqlite = args.database_url.startswith("sqlite")
    url = f"sqlite:///{workdir}/gateway.db" if sqlite else _new_database(args.database_url)
    config = workdir / "gateway.yaml"
    gateway_config(config, upstream.base_url)
    try:
        key = create_key(url)
        server = Server(url, env=_server_env(args, workdir, config, args.workers))
        try:
            body, target = chat_body(MODEL), server.base_url + "/v1/chat/completions"
            run_wrk(target, body, key, args.connections, 2, workdir)  # warm
            load = run_wrk(target, body, key, args.connections, args.duration, workdir)
            lat = latency_pairs(
                server.port, "/v1/chat/completions", {"Authorization": f"Bearer {key}"}, upstream.port,
                args.latency_requests,
            )  # fmt: skip
        finally:
            server.stop()
    finally:
        if not sqlite:
            _drop_database(args.database_url, url)
    return {"rps": load["rps"], "added_p50_ms": lat["added_p50_ms"], "added_p99_ms": lat["added_p99_ms"]}


def against_litellm(args: argparse.Namespace) -> None:
    """Both gateways with --workers processes in front of the same HTTP upstream, one after the other."""
    from baseline_litellm import LITELLM_VERSION, measure_litellm

    workdir = Path(tempfile.mkdtemp(prefix="ph-bench-workers-litellm-"))
    upstream = start_upstream(workdir)
    try:
        ours = pilothouse_over_http(upstream, args, workdir)
        theirs = measure_litellm(upstream, args, workdir, workers=args.workers)
    finally:
        upstream.stop()
    print(
        f"in front of the same HTTP upstream (0 ms, on CPU 1 with wrk), {args.workers} workers each, "
        f"{args.connections} connections:"
    )
    print(
        f"  pilothouse {ours['rps']:,.0f} req/s, added p50 {ours['added_p50_ms']:.3f} / p99 "
        f"{ours['added_p99_ms']:.3f} ms at 1 connection (target p50 <= 0.5 ms)"
    )
    print(
        f"  litellm {LITELLM_VERSION} {theirs['rps']:,.0f} req/s, added p50 "
        f"{theirs['added_p50_ms']:.3f} / p99 {theirs['added_p99_ms']:.3f} ms"
    )
    print(f"  pilothouse / litellm req/s: {ours['rps'] / max(theirs['rps'], 1e-9):.1f}x (issue 26: >= 100x)")


def cpu_snapshot(server_pid: int, admin_url: str, url: str) -> dict[str, float]:
    """CPU seconds so far of: the server's processes (parent, workers, span writer), the PostgreSQL
    backends of its database, Redis, and wrk (this process's finished children), and the machine."""
    redis = 0.0
    pids = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True).stdout.split()
    for pid in pids:
        redis += tree_cpu_seconds(int(pid))
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    busy = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4)) / os.sysconf("SC_CLK_TCK")
    return {
        "pilothouse": tree_cpu_seconds(server_pid),
        "postgresql": 0.0 if url.startswith("sqlite") else postgres_cpu_seconds(admin_url, url),
        "redis": redis,
        "wrk": resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime,
        "machine": busy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--baseline", choices=("litellm", "none"), default="litellm")
    parser.add_argument("--latency-requests", type=int, default=2000, help="per gateway at 1 connection")
    args = parser.parse_args()
    args.starts = 1  # measure_litellm times this many starts
    if not wrk_available():
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    load_before = os.getloadavg()
    rates: dict[int, list[float]] = {1: [], args.workers: []}
    for _ in range(args.rounds):
        for workers in rates:
            rates[workers].append(one_run(args, workers))
    one, many = statistics.median(rates[1]), statistics.median(rates[args.workers])
    pairs = ", ".join(f"{b / a:.2f}" for a, b in zip(rates[1], rates[args.workers], strict=True))
    print(f"median of {args.rounds} rounds, alternating, {args.connections} connections")
    print(f"--workers 1: {one:,.0f} req/s; --workers {args.workers}: {many:,.0f} req/s")
    print(f"ratio {many / one:.2f}x (round by round: {pairs}); target >= 1.8x at --workers 2")
    for workers, rounds in CORES.items():
        mean = {k: statistics.mean(r[k] for r in rounds) for k in rounds[0]}
        print(
            f"--workers {workers}, cores used (mean of rounds): "
            + ", ".join(f"{k} {v:.2f}" for k, v in mean.items())
        )
    print(
        "  (machine: every process's CPU, other work included; with --workers 2 the server can have at"
        " most the cores the others leave it)"
    )
    if args.baseline == "litellm":
        against_litellm(args)
    load_after = os.getloadavg()
    print(
        f"cores: {os.cpu_count()}; load average before {', '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.2f}' for x in load_after)} (a machine shared with other work)"
    )


if __name__ == "__main__":
    main()
