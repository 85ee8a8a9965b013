"""Eval runner benchmark: `pilothouse eval run` over HTTP against promptfoo, in the same run.

    python benchmarks/eval_runner.py [--rows 2000] [--concurrency 16] [--runs 5] [--promptfoo-runs 3]
        [--promptfoo-version 0.121.20 | --no-promptfoo] [--mock fast|simulated] [--baseline-src PATH]
        [--more] [--quick]

The main figure: `pilothouse eval run SPEC -q` as a real CLI process, timed from process start to exit
(interpreter start, imports, opening the store, importing the dataset file, every call, scoring, the
final writes, the printed summary, shutdown; with its bytecode compiled, as an installed package has
it, whatever PYTHONDONTWRITEBYTECODE says), for --rows items at --concurrency against an
OpenAI-compatible mock on loopback that echoes the prompt (so the `contains` scorer passes). Each run
gets a fresh copy of an already migrated SQLite database (a store a user has run evals in before: no
dataset, no cached answers); one more run on a new database shows what the first run ever adds (the
migrations). Printed: rows/s wall-clock, rows/s by the runner's own clock (the run's created ->
finished timestamps), start-up (process start -> run created, dataset import included), and what
follows the run (reading it back, printing, exit); medians of --runs.

The mock: `--mock fast` (default) is `benchmarks/_fast_upstream.py`, a bare asyncio/uvloop server,
because `pilothouse.testing.SimulatedUpstream` (uvicorn + an ASGI app that records every request)
serves fewer requests per second than the eval runner's target and would be the bottleneck; its
capacity (req/s with `wrk`, 16 connections, when wrk is installed) is printed for both.

The baseline, alternating with ours on the same mock: promptfoo (from the npm registry, installed
once into ~/.cache/pilothouse-bench/promptfoo; Node.js 20+), with an equivalent config: the same
prompt, provider `openai:chat` at the mock's base URL, a `contains` assertion, `-j CONCURRENCY`,
`--no-cache`, no table and no progress bar, its telemetry, update check and sharing off, its database
in a folder of this benchmark warmed up by one small run (as ours is migrated beforehand), every
request not for loopback sent to a proxy that refuses it. Offline, promptfoo waits 1 s at exit for its
telemetry to flush ("telemetry.shutdown() timed out"), which its wall-clock includes.
`--baseline-src PATH` also times the CLI of another checkout (e.g. a git worktree at the previous
commit: its `src` folder put first on PYTHONPATH, run with this virtualenv), alternating.

`--more` adds the in-process figures: `run_eval` with the simulated model through the gateway's router
(0 ms at concurrency 16 and 100, 50 ms at concurrency 100: ceiling 2,000 rows/s), a re-run answered
from the response cache, peak RSS against dataset size, and `pilothouse eval --help` start time.
Targets: >= 2,000 rows/s wall-clock over HTTP including start-up; RSS flat in dataset size; CLI start
<= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import BIN

HERE = Path(__file__).parent
PROMPTFOO_HOME = Path.home() / ".cache" / "pilothouse-bench" / "promptfoo"
PROMPT = "Explain {{topic}} briefly."
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
SIMULATED_UPSTREAM = """
import sys, time
from pilothouse.testing import SimConfig, SimulatedUpstream
SimulatedUpstream(SimConfig(echo=True), port=int(sys.argv[1])).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


# -- the mock -----------------------------------------------------------------------------------------


class Mock:
    """The OpenAI-compatible mock, in a process of its own."""

    def __init__(self, kind: str) -> None:
        from pilothouse.testing import free_port

        self.kind = kind
        self.port = free_port()
        command = (
            [sys.executable, str(HERE / "_fast_upstream.py"), str(self.port)]
            if kind == "fast"
            else [sys.executable, "-c", SIMULATED_UPSTREAM, str(self.port)]
        )
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {kind} mock did not start")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def capacity(self, connections: int, seconds: int = 3) -> float | None:
        """Requests per second the mock serves to wrk (None without wrk)."""
        if shutil.which("wrk") is None:
            return None
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            body = json.dumps(
                {"model": "sim", "messages": [{"role": "user", "content": "Explain topic1 briefly."}]}
            )
            script.write(
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body)}\n"
            )
        try:
            out = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{connections}",
                    f"-d{seconds}s",
                    "-s",
                    script.name,
                    f"http://127.0.0.1:{self.port}/v1/chat/completions",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            os.unlink(script.name)
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        return float(found.group(1)) if found else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


# -- pilothouse eval run -------------------------------------------------------------------------------


def write_items(folder: Path, rows: int) -> None:
    with (folder / "items.jsonl").open("w") as handle:
        for n in range(rows):
            handle.write(json.dumps({"topic": f"topic{n}"}) + "\n")
    with (folder / "items.csv").open("w") as handle:
        handle.write("topic\n" + "".join(f"topic{n}\n" for n in range(rows)))


def write_spec(folder: Path, base_url: str, concurrency: int) -> Path:
    spec = folder / "spec.yaml"
    spec.write_text(
        "dataset: items.jsonl\n"
        "target:\n"
        "  model: sim\n"
        f"  base_url: {base_url}\n"
        "  api_key: not-needed\n"
        "  max_tokens: 32\n"
        f"  prompt: {json.dumps(PROMPT)}\n"
        "scorers:\n"
        "  - type: contains\n"
        '    value: "{{topic}}"\n'
        f"concurrency: {concurrency}\n"
    )
    return spec


def migrated_database(folder: Path, src: Path | None = None) -> Path:
    """An empty store at the newest schema (of the checkout at ``src``, when given: its head may be
    older than ours), copied for every run."""
    template = folder / ("template.db" if src is None else "baseline-template.db")
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    subprocess.run(
        [str(BIN), "db", "upgrade", "--database-url", f"sqlite:///{template}"],
        check=True,
        capture_output=True,
        env=env,
    )
    return template


def cli_run(folder: Path, spec: Path, template: Path | None, src: Path | None = None) -> dict[str, float]:
    """Time one `pilothouse eval run` process; its figures (seconds and rows)."""
    database = folder / "run.db"
    for old in folder.glob("run.db*"):
        old.unlink()
    if template is not None:
        shutil.copyfile(template, database)
    # As an installed package runs: its bytecode compiled once (pip does it at install; the warm-up
    # run writes it here), not compiled again at every start as PYTHONDONTWRITEBYTECODE would have it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    command = [str(BIN), "eval", "run", str(spec), "-q", "--database-url", f"sqlite:///{database}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_ns = time.time_ns()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder, env=env, check=False)
    wall = time.perf_counter() - started
    cpu = _cpu_since(before)
    if done.returncode != 0:
        raise SystemExit(f"pilothouse eval run failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    run_id = done.stdout.strip().splitlines()[-1]
    with sqlite3.connect(database) as conn:
        created_ns, finished_ns, summary = conn.execute(
            "SELECT created_ns, finished_ns, summary FROM eval_runs WHERE id = ?", (run_id,)
        ).fetchone()
        stored = conn.execute("SELECT count(*) FROM eval_results WHERE run_id = ?", (run_id,)).fetchone()[0]
    figures = json.loads(summary)
    rows = int(figures["results"])
    if figures["errors"] or stored != rows:
        raise SystemExit(f"the run had errors or lost results: {figures['errors']} errors, {stored}/{rows}")
    run_s = (finished_ns - created_ns) / 1e9
    start_s = (created_ns - started_ns) / 1e9
    return {
        "rows": rows,
        "wall_s": wall,
        "cpu_s": cpu,
        "run_s": run_s,
        "start_s": start_s,
        "after_s": wall - run_s - start_s,
    }


def _cpu_since(before: resource.struct_rusage) -> float:
    """CPU seconds (user + system) of the children that ended since ``before``."""
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


# -- promptfoo ----------------------------------------------------------------------------------------


def promptfoo_bin(version: str) -> Path:
    """promptfoo ``version``'s command, installed from npm into the cache folder the first time."""
    binary = PROMPTFOO_HOME / "node_modules" / ".bin" / "promptfoo"
    package = PROMPTFOO_HOME / "node_modules" / "promptfoo" / "package.json"
    if binary.exists() and json.loads(package.read_text()).get("version") == version:
        return binary
    if shutil.which("npm") is None:
        raise SystemExit("promptfoo needs Node.js and npm (or pass --no-promptfoo)")
    PROMPTFOO_HOME.mkdir(parents=True, exist_ok=True)
    print(f"installing promptfoo {version} from npm into {PROMPTFOO_HOME} ...", flush=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", f"promptfoo@{version}"],
        cwd=PROMPTFOO_HOME,
        check=True,
    )
    return binary


def promptfoo_env(home: Path) -> dict[str, str]:
    """Nothing leaves the machine: no telemetry, update check or sharing, and its own database folder.
    promptfoo still posts one "telemetry disabled" event (to r.promptfoo.app): every request not for
    loopback goes to a proxy that refuses it, so not even a DNS query leaves."""
    return {
        **os.environ,
        "PROMPTFOO_DISABLE_TELEMETRY": "1",
        "PROMPTFOO_DISABLE_UPDATE": "1",
        "PROMPTFOO_DISABLE_SHARING": "1",
        "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1",
        "PROMPTFOO_CACHE_ENABLED": "false",
        "PROMPTFOO_CONFIG_DIR": str(home),
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "NO_COLOR": "1",
    }


def write_promptfoo_config(folder: Path, base_url: str, items: str) -> Path:
    config = folder / f"promptfoo-{items.split('.')[0]}.yaml"
    config.write_text(
        "description: eval runner benchmark\n"
        f"prompts:\n  - {json.dumps(PROMPT)}\n"
        "providers:\n"
        "  - id: openai:chat:sim\n"
        "    config:\n"
        f"      apiBaseUrl: {base_url}\n"
        "      apiKey: not-needed\n"
        "      max_tokens: 32\n"
        'defaultTest:\n  assert:\n    - type: contains\n      value: "{{topic}}"\n'
        f"tests: file://{items}\n"
    )
    return config


def promptfoo_run(binary: Path, folder: Path, config: Path, concurrency: int, home: Path) -> dict[str, float]:
    command = [
        str(binary),
        "eval",
        "-c",
        str(config),
        "-j",
        str(concurrency),
        "--no-cache",
        "--no-table",
        "--no-progress-bar",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder, env=promptfoo_env(home))
    wall = time.perf_counter() - started
    cpu = _cpu_since(before)
    output = done.stdout + done.stderr
    passed = re.search(r"([\d,]+) passed", output)
    if done.returncode != 0 or passed is None:
        raise SystemExit(f"promptfoo failed:\n{output[-3000:]}")
    duration = re.search(r"Duration: (?:(\d+)m )?(\d+)s", output)
    own = (int(duration.group(1) or 0) * 60 + int(duration.group(2))) if duration else float("nan")
    return {"rows": int(passed.group(1).replace(",", "")), "wall_s": wall, "cpu_s": cpu, "run_s": float(own)}


# -- the in-process figures (--more) ------------------------------------------------------------------


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
        write_items(folder, rows)
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
    return {"model": "sim", "config": "models.yaml", "max_tokens": 32, "prompt": PROMPT}


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


def more(rows: int, memory_rows: list[int], starts: int) -> None:
    print("in process (run_eval in a child process, simulated model through the router, no HTTP):")
    line("in-process sim, 0 ms, concurrency 16", workload(rows, in_process(), 16))
    line("in-process sim, 0 ms, concurrency 100", workload(rows, in_process(), 100))
    slow = workload(min(rows, 10_000), in_process(), 100, latency_ms=50)
    line("in-process sim, 50 ms, concurrency 100 (ceiling 2,000)", slow)
    line("re-run answered from the response cache", workload(rows, in_process(), 16, runs=2))
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
    start = cli_start(starts)
    print(f"CLI start: `pilothouse eval --help` {start:.2f} s (median of {starts}); target <= 1 s")


# -- main ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    for text in Path("/proc/cpuinfo").read_text().splitlines():
        if text.startswith("model name"):
            return text.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(label: str, runs: list[dict[str, float]]) -> None:
    rows = runs[0]["rows"]
    walls = ", ".join(f"{r['rows'] / r['wall_s']:,.0f}" for r in runs)
    print(
        f"  {label:34} {rows / median(runs, 'wall_s'):>7,.0f} rows/s wall-clock (runs: {walls}); "
        f"{rows / median(runs, 'run_s'):,.0f} rows/s by its own clock; CPU {median(runs, 'cpu_s'):.3f} s"
    )
    if "start_s" in runs[0]:
        print(
            f"  {'':34} wall {median(runs, 'wall_s'):.3f} s = start-up {median(runs, 'start_s'):.3f} s "
            f"(process start -> run created) + run {median(runs, 'run_s'):.3f} s + after the run "
            f"{median(runs, 'after_s'):.3f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000, help="Items of the CLI runs.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5, help="CLI runs of ours (medians are printed).")
    parser.add_argument("--promptfoo-runs", type=int, default=3)
    parser.add_argument("--promptfoo-version", default="0.121.20")
    parser.add_argument("--no-promptfoo", action="store_true", help="Skip the promptfoo baseline.")
    parser.add_argument("--mock", choices=("fast", "simulated"), default="fast")
    parser.add_argument("--baseline-src", type=Path, help="Also time the CLI of this checkout's src.")
    parser.add_argument("--more", action="store_true", help="Add the in-process and memory figures.")
    parser.add_argument("--more-rows", type=int, default=20_000, help="Items of the in-process runs.")
    parser.add_argument("--memory-rows", default="10000,100000", help="Dataset sizes of the memory runs.")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="Small sizes, to check the script.")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.promptfoo_runs, args.more_rows, args.memory_rows = 2, 1, 2_000, "1000,5000"
    print(f"eval runner benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    promptfoo = None if args.no_promptfoo else promptfoo_bin(args.promptfoo_version)
    mocks = {kind: Mock(kind) for kind in ("fast", "simulated")}
    try:
        for kind, mock in mocks.items():
            capacity = mock.capacity(args.concurrency)
            rate = "wrk is not installed" if capacity is None else f"{capacity:,.0f} req/s"
            used = " (used below)" if kind == args.mock else ""
            print(f"mock capacity, {args.concurrency} connections, {kind}{used}: {rate}")
        for kind, mock in list(mocks.items()):
            if kind != args.mock:
                mock.stop()
                del mocks[kind]
        mock = mocks[args.mock]
        with tempfile.TemporaryDirectory(prefix="ph-eval-cli-") as tmp:
            folder = Path(tmp)
            write_items(folder, args.rows)
            spec = write_spec(folder, mock.base_url, args.concurrency)
            template = migrated_database(folder)
            baseline_template = (
                None if args.baseline_src is None else migrated_database(folder, args.baseline_src)
            )
            ours: list[dict[str, float]] = []
            previous: list[dict[str, float]] = []
            theirs: list[dict[str, float]] = []
            pf_home = folder / "promptfoo-home"
            if promptfoo is not None:
                write_items_small = folder / "small.csv"
                write_items_small.write_text("topic\ntopic0\ntopic1\n")
                warm = write_promptfoo_config(folder, mock.base_url, "small.csv")
                promptfoo_run(promptfoo, folder, warm, args.concurrency, pf_home)  # creates its database
                pf_config = write_promptfoo_config(folder, mock.base_url, "items.csv")
            cli_run(folder, spec, template)  # warm the page cache and write the bytecode
            if args.baseline_src is not None:
                cli_run(folder, spec, baseline_template, args.baseline_src)
            for n in range(args.runs):
                ours.append(cli_run(folder, spec, template))
                if args.baseline_src is not None:
                    previous.append(cli_run(folder, spec, baseline_template, args.baseline_src))
                if promptfoo is not None and n < args.promptfoo_runs:
                    theirs.append(promptfoo_run(promptfoo, folder, pf_config, args.concurrency, pf_home))
            first = cli_run(folder, spec, None)
            print(
                f"`pilothouse eval run` of {args.rows:,} rows at concurrency {args.concurrency} over HTTP "
                f"({args.mock} mock), medians of {args.runs}:"
            )
            report("pilothouse", ours)
            if previous:
                report(f"pilothouse at {args.baseline_src}", previous)
            print(
                f"  {'first run on a new database':34} {first['rows'] / first['wall_s']:>7,.0f} rows/s "
                f"wall-clock (start-up {first['start_s']:.3f} s, migrations included)"
            )
            if theirs:
                report(f"promptfoo {args.promptfoo_version}", theirs)
                ratio = median(theirs, "wall_s") / median(ours, "wall_s")
                print(f"  pilothouse is {ratio:.1f}x promptfoo's rows/s wall-clock")
            verdict = "met" if args.rows / median(ours, "wall_s") >= 2000 else "NOT met"
            print(f"target >= 2,000 rows/s wall-clock including start-up: {verdict}")
    finally:
        for mock in mocks.values():
            mock.stop()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.more:
        more(args.more_rows, [int(n) for n in args.memory_rows.split(",")], args.starts)


if __name__ == "__main__":
    main()
