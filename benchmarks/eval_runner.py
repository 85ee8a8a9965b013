"""Eval runner benchmark: rows per second, memory against dataset size, CLI start time.

    python benchmarks/eval_runner.py [--rows 20000] [--memory-rows 10000,100000] [--starts 5] [--quick]

Every workload runs `run_eval` in a child process of its own (so its peak RSS is its own) on a fresh
SQLite file, with a spec that renders one prompt per item and scores it with `contains`:
- throughput with the simulated model in-process through the gateway's router (no HTTP), 0 ms latency,
  concurrency 16; the same with 50 ms latency at concurrency 100 (the ceiling is 100 / 0.05 = 2,000
  rows/s); the same over HTTP through the openai client to a SimulatedUpstream process (0 ms, 32
  connections); and a re-run answered from the response cache. Wall time of the whole run: importing
  the dataset file into the store, every call, scoring, writing results, spans and cache entries.
- memory: peak RSS of a run over --memory-rows items, with SQLite's page cache as the store configures
  it (64 MiB per connection: it fills up as the database grows, then stays) and capped at 2 MiB (what
  the runner itself holds: flat, since items are streamed and results written in batches).
- CLI start: wall time of `pilothouse eval --help` (median of --starts).
Targets: >= 2,000 rows/s at 0 ms; RSS flat in dataset size; CLI start <= 1 s. Reference (promptfoo
0.121.20 on this machine, from the issue): 80-87 rows/s by its own clock, 35 rows/s wall time for 200
rows, 3 s to start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import BIN

PROMPTFOO = {"rows_per_s_own_clock": (80 + 87) / 2, "rows_per_s_wall": 35.0, "start_s": 3.0}
CHILD = """
import asyncio, json, resource, sys, time
from pathlib import Path
from pilothouse.evals.runner import run_eval
from pilothouse.evals.spec import parse_spec
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore

folder, target = Path(sys.argv[1]), json.loads(sys.argv[2])
concurrency, runs = int(sys.argv[3]), int(sys.argv[4])
store = EvalStore(SqlStore.from_url(f"sqlite:///{folder / 'bench.db'}"))
if len(sys.argv) > 5:  # cap SQLite's page cache (KiB per connection) to see the rest of the memory
    from sqlalchemy import event

    event.listen(store.engine, "connect", lambda c, _: c.execute(f"PRAGMA cache_size=-{sys.argv[5]}"))
    store.engine.dispose()
spec = parse_spec(
    {"dataset": "items.jsonl", "target": target, "concurrency": concurrency,
     "scorers": [{"type": "contains", "value": "{{topic}}"}]},
    base_dir=folder,
)
for _ in range(runs):
    started = time.perf_counter()
    run = asyncio.run(run_eval(spec, store))
    seconds = time.perf_counter() - started
s = run.summary
assert s.errors == 0 and s.metric("contains").mean == 1.0, s
print(json.dumps({"rows": s.results, "seconds": seconds, "cached": s.cached,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
UPSTREAM = """
import sys, time
from pilothouse.testing import SimConfig, SimulatedUpstream
SimulatedUpstream(SimConfig(echo=True), port=int(sys.argv[1])).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def workload(
    rows: int,
    target: dict[str, Any],
    concurrency: int,
    *,
    latency_ms: float = 0.0,
    runs: int = 1,
    page_cache_kib: int | None = None,
) -> dict[str, Any]:
    """Run the eval in a child process on a fresh database; its figures."""
    with tempfile.TemporaryDirectory(prefix="ph-eval-bench-") as tmp:
        folder = Path(tmp)
        with (folder / "items.jsonl").open("w") as handle:
            for n in range(rows):
                handle.write(json.dumps({"topic": f"topic{n}"}) + "\n")
        (folder / "models.yaml").write_text(
            "models:\n  - {name: sim, provider: sim, model: sim-1, "
            f"options: {{echo: true, latency_ms: {latency_ms}}}}}\nrouter: {{retries: 0}}\n"
        )
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(folder),
                json.dumps(target),
                str(concurrency),
                str(runs),
                *([str(page_cache_kib)] if page_cache_kib else []),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"benchmark child failed:\n{done.stderr[-3000:]}")
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        figures["rows_per_s"] = figures["rows"] / figures["seconds"]
        return figures


def in_process() -> dict[str, Any]:
    return {"model": "sim", "config": "models.yaml", "max_tokens": 32, "prompt": "Explain {{topic}} briefly."}


def over_http(port: int) -> dict[str, Any]:
    return {
        "model": "sim",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "api_key": "not-needed",
        "max_tokens": 32,
        "prompt": "Explain {{topic}} briefly.",
    }


def cli_start(starts: int) -> float:
    """Median wall time of `pilothouse eval --help`."""
    times = []
    for _ in range(starts):
        started = time.perf_counter()
        subprocess.run([str(BIN), "eval", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def line(label: str, figures: dict[str, Any]) -> None:
    print(
        f"  {label:52} {figures['rows_per_s']:>8,.0f} rows/s  ({figures['rows']:,} rows in "
        f"{figures['seconds']:.2f} s, peak RSS {figures['max_rss_mib']:.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000, help="Items of the throughput runs.")
    parser.add_argument("--memory-rows", default="10000,100000", help="Dataset sizes of the memory runs.")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="Small sizes, to check the script.")
    args = parser.parse_args()
    rows = 2_000 if args.quick else args.rows
    memory_rows = [1_000, 5_000] if args.quick else [int(n) for n in args.memory_rows.split(",")]
    from pilothouse.testing import free_port

    print(f"eval runner benchmark ({os.cpu_count()} CPUs)")
    print("throughput (wall time of the whole run, dataset import included):")
    zero = workload(rows, in_process(), 16)
    line("in-process sim, 0 ms, concurrency 16", zero)
    line("in-process sim, 0 ms, concurrency 100", workload(rows, in_process(), 100))
    slow = workload(min(rows, 10_000), in_process(), 100, latency_ms=50)
    line("in-process sim, 50 ms, concurrency 100 (ceiling 2,000)", slow)
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert upstream.stdout is not None and upstream.stdout.readline().strip() == "ready"
        http = workload(min(rows, 10_000), over_http(port), 32)
        line("openai client -> SimulatedUpstream (HTTP), 0 ms, c=32", http)
    finally:
        upstream.terminate()
        upstream.wait()
    cached = workload(rows, in_process(), 16, runs=2)
    line("re-run answered from the response cache", cached)
    print("memory (peak RSS of the whole process, in-process sim, 0 ms):")
    settings = (("SQLite page cache as configured (64 MiB)", None), ("page cache capped at 2 MiB", 2048))
    for label, page_cache in settings:
        peaks = []
        for n in memory_rows:
            figures = workload(n, in_process(), 16, page_cache_kib=page_cache)
            peaks.append(figures["max_rss_mib"])
            line(f"{n:,} rows, {label}", figures)
        growth = peaks[-1] - peaks[0]
        per_row = 1024 * 1024 * growth / max(1, memory_rows[-1] - memory_rows[0])
        print(
            f"  {memory_rows[-1] // memory_rows[0]}x the rows: peak RSS {peaks[0]:.0f} -> "
            f"{peaks[-1]:.0f} MiB ({growth:+.0f} MiB, {per_row:.0f} bytes/row), {label}"
        )
    start = cli_start(args.starts)
    print(f"CLI start: `pilothouse eval --help` {start:.2f} s (median of {args.starts})")
    print("against promptfoo 0.121.20 (the issue's figures on this machine):")
    print(
        f"  rows/s at 0 ms: {zero['rows_per_s']:,.0f} vs {PROMPTFOO['rows_per_s_own_clock']:.0f} by its own "
        f"clock ({zero['rows_per_s'] / PROMPTFOO['rows_per_s_own_clock']:.0f}x) and "
        f"{PROMPTFOO['rows_per_s_wall']:.0f} wall ({zero['rows_per_s'] / PROMPTFOO['rows_per_s_wall']:.0f}x)"
    )
    print(
        f"  start: {start:.2f} s vs {PROMPTFOO['start_s']:.0f} s ({PROMPTFOO['start_s'] / start:.1f}x faster)"
    )
    verdict = "met" if zero["rows_per_s"] >= 2000 else "NOT met"
    print(
        f"targets: >= 2,000 rows/s at 0 ms: {verdict}; CLI start <= 1 s: {'met' if start <= 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
