"""Web UI benchmark: the server time of every page over 1,000,000 stored spans.

    python benchmarks/ui.py [--spans 1000000] [--keep PATH] [--database-url postgresql://...] [--pages REGEX]
    python benchmarks/ui.py --trace-view [--repeats 40]

Fills the store as benchmarks/query.py does (reuse its database with ``--keep``: the same file serves
both), adds a dataset and two eval runs, starts ``pilothouse serve``, logs in through the login form
and times each page from a client over loopback (the whole response, HTML included): Overview and Costs
(with their exact breakdowns by key, user, prompt and tag), the trace list with each kind of filter and
sort and its next page, full-text searches (a word that occurs nowhere, common and rare words, prefixes),
the export, a trace and a span, sessions, users, models, keys, datasets, eval runs and their comparison,
prompts, review, monitors and online evaluators. Target: p95 <= 200 ms per page.

On PostgreSQL the fill first makes the partitions of the last 31 days, as the retention job does while
spans arrive.

``--trace-view`` measures the trace view alone, on a fresh SQLite file: an agent trace of 10,000 spans
(1 KiB of prompt and answer each) against one of 100 spans (the baseline), both sent through OTLP: the
page's time and size (the tree's outline is in the page; no span's text is), a span's detail (fetched
when it is selected), for scale the size of the whole trace as ``GET /api/traces/{id}`` gives it, and
(when /usr/bin/chromium is there) the time until the page is usable in headless Chromium: from the
navigation's start to the tree drawn.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import BIN, Server, export_body, openinference_span
from query import PROJECT, fill

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.evals import EvalResult, RunStatus, ScoreRecord, SummaryBuilder
from pilothouse.domain.money import Money
from pilothouse.store.evals import EvalStore
from pilothouse.store.partitions import DAY_NS, ensure_days
from pilothouse.store.sql import SqlStore

TARGET_MS = 200.0
SECRET = "benchmark-session-secret-0123456789abcdef"


def seed_evals(store: SqlStore, items: int = 500) -> list[str]:
    """A dataset and two runs of it (once per database); returns the run ids, newest first."""
    evals = EvalStore(store)
    runs = [r for r in evals.list_runs(PROJECT, 10) if r.name in ("bench-baseline", "bench-candidate")]
    if len(runs) >= 2:
        return [r.id for r in runs[:2]]
    rng = random.Random(3)
    data = [
        DatasetItem(id=f"item-{i}", input={"question": f"question {i}"}, expected=f"answer {i}")
        for i in range(items)
    ]
    version, _ = evals.import_items(PROJECT, "bench-questions", data, source="benchmarks/ui.py")
    ids = []
    for name, quality in (("bench-baseline", 0.85), ("bench-candidate", 0.83)):
        run = evals.create_run(
            PROJECT,
            name=name,
            spec={},
            dataset=version.name,
            dataset_version_id=version.id,
            dataset_version=version.version,
            target="model bench",
            epochs=1,
            items_total=items,
            scorers=["exact_match", "similarity"],
        )
        results = []
        for position, item in enumerate(data, 1):
            ok = rng.random() < quality
            results.append(
                EvalResult(
                    run_id=run.id,
                    item_id=item.id,
                    epoch=1,
                    position=position,
                    output=str(item.expected) if ok else "no idea",
                    latency_ms=rng.uniform(100, 900),
                    cost_usd=Money.from_usd("0.0001"),
                    scores=(
                        ScoreRecord("exact_match", float(ok), ok),
                        ScoreRecord("similarity", rng.random(), ok),
                    ),
                )
            )
        evals.write_results(results)
        builder = SummaryBuilder({"exact_match": 1.0, "similarity": 1.0})
        builder.add_all(results)
        evals.set_run_status(run.id, RunStatus.COMPLETED, builder.summary())
        ids.append(run.id)
    return ids[::-1]


def admin_key(url: str) -> str:
    done = subprocess.run(
        [str(BIN), "keys", "create", "--name", "ui-bench", "--scopes", "admin,read", "--database-url", url],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def login(http: httpx.Client, key: str) -> None:
    form = http.get("/login").text
    token = re.search(r'name="login_token" value="([^"]+)"', form)
    assert token, "no login form"
    response = http.post("/login", data={"key": key, "login_token": token.group(1), "next": "/"})
    assert response.status_code == 303, response.text[:300]


def timed(http: httpx.Client, paths: list[str], repeats: int) -> list[float]:
    """Milliseconds per request, cycling through ``paths`` (a warm-up request each first)."""
    for path in paths:
        http.get(path).raise_for_status()
    times = []
    for i in range(repeats):
        path = paths[i % len(paths)]
        started = time.perf_counter()
        response = http.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def agent_trace(rng: random.Random, spans: int, start_ns: int) -> tuple[str, list[bytes], str]:
    """An agent trace of ``spans`` spans (a root, iterations of 100 steps, LLM calls with 1 KiB of
    text): its id, OTLP bodies of at most 2,000 spans and the id of a deep span."""
    trace_id = rng.randbytes(16)
    made = []
    root = openinference_span(rng, start_ns)
    root.trace_id, root.name = trace_id, "agent"
    made.append(root)
    iteration = root
    for i in range(1, spans):
        span = openinference_span(rng, start_ns + i * 1_000_000)
        span.trace_id = trace_id
        if i % 101 == 1:
            span.name, span.parent_span_id = f"iteration-{i // 101}", root.span_id
            iteration = span
        else:
            span.name, span.parent_span_id = f"step-{i}", iteration.span_id
        made.append(span)
    bodies = [export_body(made[at : at + 2000]) for at in range(0, len(made), 2000)]
    return trace_id.hex(), bodies, made[-1].span_id.hex()


CHROMIUM = Path("/usr/bin/chromium")


def usable_in_browser(base_url: str, key: str, path: str, repeats: int) -> list[float]:
    """Milliseconds from the start of each navigation to ``path`` until the trace view's script has
    drawn the tree (its ``trace-tree-ready`` mark) in headless Chromium: the server's time, the
    transfer, parsing the page and its outline, and building the tree. A warm-up load first."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{base_url}/login")
        page.fill("#key", key)
        page.press("#key", "Enter")
        page.wait_for_url(f"{base_url}/")
        times = []
        for attempt in range(repeats + 1):
            page.goto(f"{base_url}{path}")
            page.wait_for_selector("#span-tree[data-ready]")
            ready = page.evaluate("performance.getEntriesByName('trace-tree-ready')[0].startTime")
            if attempt:
                times.append(float(ready))
        browser.close()
    return times


def trace_view(repeats: int) -> None:
    """The trace view at 100 and 10,000 spans (see the module's docstring)."""
    url = f"sqlite:///{os.path.join(tempfile.mkdtemp(prefix='ph-bench-trace-view-'), 'ui.db')}"
    done = subprocess.run(
        [
            str(BIN),
            "keys",
            "create",
            "--name",
            "bench",
            "--scopes",
            "admin,read,ingest",
            "--database-url",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    key = done.stdout.strip().splitlines()[-1]
    api = {"Authorization": f"Bearer {key}"}
    rng = random.Random(5)
    server = Server(url, env={"PILOTHOUSE_SESSION_SECRET": SECRET})
    rows = []
    try:
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            traces = {}
            for size in (100, 10_000):
                trace_id, bodies, deep = agent_trace(rng, size, time.time_ns() - 3_600 * 10**9)
                for body in bodies:
                    headers = {**api, "Content-Type": "application/x-protobuf"}
                    http.post("/v1/traces", content=body, headers=headers).raise_for_status()
                traces[size] = (trace_id, deep)
            for size, (trace_id, _) in traces.items():
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    got = http.get(f"/api/traces/{trace_id}", headers=api)
                    if got.status_code == 200 and len(got.json()["observations"]) >= size:
                        break
                    time.sleep(0.2)
                else:
                    raise RuntimeError(f"the {size}-span trace was not stored")
            login(http, key)
            for size, (trace_id, deep) in traces.items():
                page = f"/traces/{trace_id}"
                detail = f"/traces/{trace_id}/spans/{deep}"
                sizes = {
                    "page": len(http.get(page).content),
                    "span detail": len(http.get(detail).content),
                    "api (whole trace)": len(http.get(f"/api/traces/{trace_id}", headers=api).content),
                }
                for label, path in (("page", page), ("span detail", detail)):
                    times = timed(http, [path], repeats)
                    rows.append((size, label, statistics.median(times), p95(times), sizes[label]))
                rows.append((size, "api (whole trace)", None, None, sizes["api (whole trace)"]))
            if CHROMIUM.exists():
                for size, (trace_id, _) in traces.items():
                    times = usable_in_browser(server.base_url, key, f"/traces/{trace_id}", repeats)
                    rows.append((size, "usable in Chromium", statistics.median(times), p95(times), None))
    finally:
        server.stop()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"\ntrace view (load average {' '.join(load)}; the 100-span trace is the baseline)")
    print(f"{'spans':>7} {'request':20} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>12}")
    for size, label, p50, p95_, size_bytes in rows:
        timing = f"{p50:8.1f} {p95_:8.1f}" if p50 is not None else f"{'–':>8} {'–':>8}"
        print(f"{size:>7,} {label:20} {timing} {'' if size_bytes is None else f'{size_bytes:,}':>12}")
    print("(usable in Chromium: from the navigation's start to the tree drawn and its script done, headless)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file (see --keep)")
    parser.add_argument(
        "--keep", default=None, help="SQLite file to reuse (filled once; benchmarks/query.py's)"
    )
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--trace-view", action="store_true", help="time the trace view at 10,000 spans")
    parser.add_argument(
        "--pages", default=None, help="time only the pages whose label matches this regular expression"
    )
    args = parser.parse_args()
    if args.trace_view:
        trace_view(args.repeats)
        return
    if args.database_url:
        url = args.database_url
    else:
        path = args.keep or os.path.join(tempfile.mkdtemp(prefix="ph-bench-ui-"), "query.db")
        url = f"sqlite:///{path}"
    store = SqlStore.from_url(url)
    have = store.count_spans(PROJECT)
    if have < args.spans:
        print(f"filling {args.spans - have:,} spans into {url.split('@')[-1]} ...", flush=True)
        now = time.time_ns()
        # PostgreSQL: the days' partitions, as the retention job makes them while spans arrive (else
        # the 30 days of spans would all land in the default partition)
        ensure_days(store.engine, now - 31 * DAY_NS, now)
        fill(store, args.spans - have, now, have)
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    runs = seed_evals(store)
    total = store.count_spans(PROJECT)
    key = admin_key(url)
    server = Server(url, env={"PILOTHOUSE_SESSION_SECRET": SECRET})
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            login(http, key)
            api = {"Authorization": f"Bearer {key}"}
            newest = http.get("/api/traces", params={"limit": 40}, headers=api).json()["data"]
            traces = [f"/traces/{t['id']}" for t in newest]
            spans = []
            for t in newest[:20]:
                detail = http.get(f"/api/traces/{t['id']}", headers=api).json()
                spans.append(f"/traces/{t['id']}/spans/{detail['observations'][-1]['id']}")
            sessions = [f"/sessions/{t['session_id']}" for t in newest if t["session_id"]][:20]
            cases: dict[str, list[str]] = {
                # Overview: KPIs, series, and the exact breakdowns by model, name, key, user and prompt
                # version (the dimension rollups), whole-range top traces
                "overview 24h (default)": ["/"],
                "overview 1h": ["/?range=1h"],
                "overview 7d": ["/?range=7d"],
                "overview 30d": ["/?range=30d"],
                "traces: newest": ["/traces"],
                "traces: model + 7d": ["/traces?model=gpt-4o&from=7d"],
                "traces: errors": ["/traces?status=error"],
                "traces: one user": ["/traces?user_id=user-17"],
                "traces: one key": ["/traces?key_id=key-07"],
                "traces: tag + model": ["/traces?tag=prod&model=claude-3-5-haiku"],
                "traces: latency 2-5 s": ["/traces?min_latency_ms=2000&max_latency_ms=5000"],
                "traces: cost >= $0.003": ["/traces?min_cost_usd=0.003"],
                "traces: score (none stored)": ["/traces?score=quality&min_score=0.5"],
                "traces: environment (none)": ["/traces?environment=staging"],
                "traces: by latency": ["/traces?sort=latency"],
                "traces: by cost, 7d": ["/traces?sort=cost&from=7d"],
                "traces: by tokens": ["/traces?sort=tokens"],
                "traces: by latency, 24h": ["/traces?sort=latency&order=asc&from=24h"],
                "traces: release (none)": ["/traces?release=v9&environment=production"],
                "traces: next page": [],  # filled below from the first page's cursor
                "search: word nowhere": ["/traces?q=xylophone"],
                "search: word on every call": ["/traces?q=question"],
                "search: 1 call in 4 (mini)": ["/traces?q=mini"],
                "search: rare word": ["/traces?q=123456"],
                "search: two words, 24h": ["/traces?q=question+123&from=24h"],
                "search: prefix answ*": ["/traces?q=answ*"],
                "search: prefix 12*": ["/traces?q=12*"],
                "search: prefix 1*": ["/traces?q=1*"],
                "search: word + errors": ["/traces?q=question&status=error"],
                "export: one user, CSV": ["/traces/export?user_id=user-17&format=csv"],
                "trace detail": traces,
                "span detail": spans,
                "sessions 7d": ["/sessions"],
                "session detail": sessions,
                "users 7d": ["/users"],
                "users 30d": ["/users?range=30d"],
                "models 1h": ["/models"],
                # Costs: by model, key, user and tag (exact), cache savings, forecast
                "costs 7d": ["/costs"],
                "costs 30d": ["/costs?range=30d"],
                "keys and budgets": ["/keys"],
                "datasets": ["/datasets"],
                "dataset items": ["/datasets/bench-questions"],
                "eval runs": ["/evals"],
                "eval run": [f"/evals/{runs[0]}"],
                "compare runs (500 items)": [f"/evals/compare?baseline={runs[1]}&candidate={runs[0]}"],
                "prompts": ["/prompts"],
                "review": ["/review"],
                "review agreement": ["/review/agreement"],
                "monitors": ["/monitors"],
                "online evaluators": ["/evaluators"],
            }
            first = http.get("/traces").text
            older = re.search(r'<a href="([^"]+)" rel="next">', first)
            assert older, "no next-page link on /traces"
            link = older.group(1).replace("&amp;", "&")
            cases["traces: next page"] = [link if link.startswith("/") else f"/traces{link}"]
            if args.pages:
                cases = {label: paths for label, paths in cases.items() if re.search(args.pages, label)}
            results = {label: timed(http, paths, args.repeats) for label, paths in cases.items()}
    finally:
        server.stop()
        store.close()
    print(f"\n{total:,} spans stored, database {url.split('@')[-1]}")
    print(f"{'page (HTTP GET, whole response)':34} {'p50 ms':>8} {'p95 ms':>8} {'target':>8}")
    failed = 0
    for label, times in results.items():
        over = p95(times) > TARGET_MS
        failed += over
        mark = "  OVER" if over else ""
        print(f"{label:34} {statistics.median(times):8.1f} {p95(times):8.1f} {'<= 200':>8}{mark}")
    print(f"\n{len(results) - failed} of {len(results)} pages within the 200 ms p95 target")


if __name__ == "__main__":
    main()
