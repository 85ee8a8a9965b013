"""Online evaluators benchmark: what the background worker costs ingest, and whether its work gets done.

    python benchmarks/online_evals.py [--spans 20000] [--batch 500] [--sampling 0.05] [--repeats 3]

Each run is a new ``pilothouse serve`` over a new SQLite file, sent the same OTLP protobuf LLM spans
(one trace each) by two senders, timed until every span is queryable (as benchmarks/ingest.py does).
Runs alternate (each first in every other pair) between the baseline (``online_evals: false``, no
worker) and the worker on with one evaluator sampling ``--sampling`` of the traces with a local scorer
(``contains``). Target: ingest keeps
>= 95% of the baseline's spans/s (medians of --repeats runs each).

Reliability, counted (not timed) in each worker run once its queue is empty: every sampled trace must
have an item (none lost), and >= 99.9% of the items must reach a final state (scored, or unmeasured with
a reason) within 60 s of being queued (queued = the trace was seen by the poll, ``online_evals_settle_s``,
2 s, after it was stored). The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "src"))
from _common import Server, build_bodies, create_key, send_all
from ingest import wait_stored

from pilothouse.quality.online import OnlineEvaluators, sampled
from pilothouse.store.sql import SqlStore

FINAL_WITHIN_NS = 60 * 10**9


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def reliability(url: str, sampling: float, timeout_s: float) -> dict[str, int]:
    """Wait (at most ``timeout_s``) until no item is waiting; count sampled traces, items, and items
    final within 60 s of being queued."""
    store = SqlStore.from_url(url)
    online = OnlineEvaluators(store)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts: dict[str, int] = {}
        for states in online.online.counts("default").values():
            for state, n in states.items():
                counts[state] = counts.get(state, 0) + n
        (evaluator,) = online.online.list_evaluators("default")
        polled = evaluator.cursor_pk >= online.online.max_trace_pk()  # every stored trace looked at
        if polled and not counts.get("pending") and not counts.get("running"):
            break
        time.sleep(0.5)
    (status,) = online.statuses("default")
    items = online.online.items(status.evaluator.id, limit=10_000_000)
    trace_ids = [t.id for t in online.online.live_traces(0, 2**62, 10_000_000)]
    store.close()
    expected = sum(1 for trace_id in trace_ids if sampled(trace_id, sampling))
    final = [i for i in items if i.state in ("scored", "unmeasured") and i.finished_ns is not None]
    return {
        "traces": len(trace_ids),
        "sampled": expected,
        "items": len(items),
        "scored": sum(1 for i in final if i.state == "scored"),
        "unmeasured": sum(1 for i in final if i.state == "unmeasured"),
        "final_within_60s": sum(1 for i in final if (i.finished_ns or 0) - i.created_ns <= FINAL_WITHIN_NS),
    }


def run(
    args: argparse.Namespace, bodies: list[bytes], sampling: float | None
) -> tuple[float, dict[str, int]]:
    """One run on a new server and SQLite file: spans/s until queryable, and the reliability counts
    (with the worker on)."""
    folder = tempfile.mkdtemp(prefix="ph-bench-online-")
    url = f"sqlite:///{folder}/online.db"
    key = create_key(url)
    if sampling is not None:
        store = SqlStore.from_url(url)
        rules = {"scorer": {"type": "contains", "value": "a"}, "sampling": sampling}
        OnlineEvaluators(store).create("default", "bench-contains", rules)
        store.close()
    env = {"PILOTHOUSE_HOME": folder, "PILOTHOUSE_ONLINE_EVALS": "0" if sampling is None else "1"}
    server = Server(url, env=env)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"}
    total = len(bodies) * args.batch
    try:
        cpu_start = server.cpu_seconds
        started = time.perf_counter()
        send_all(server.base_url, bodies, args.senders, {"Authorization": f"Bearer {key}"}, retry_scale=0.1)
        wait_stored(server.base_url, headers, total)
        rate = total / (time.perf_counter() - started)
        cpu_ingest = server.cpu_seconds - cpu_start
        counts: dict[str, int] = {} if sampling is None else reliability(url, sampling, args.drain_timeout_s)
        cpu_all = server.cpu_seconds - cpu_start
    finally:
        server.stop()
    label = "baseline (no worker)" if sampling is None else f"worker on, {sampling:.0%} sampled"
    cpu = f"server CPU {cpu_ingest * 1e6 / total:5.1f} us/span until queryable, {cpu_all:5.2f} s in all"
    print(f"{label:28} {rate:>7,.0f} spans/s, {cpu}" + (f"\n    {counts}" if counts else ""), flush=True)
    counts["cpu_us_per_span"] = round(cpu_ingest * 1e6 / total)
    return rate, counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--sampling", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--drain-timeout-s", type=float, default=300.0)
    args = parser.parse_args()
    bodies = build_bodies(args.spans, args.batch)
    print(f"{args.spans:,} spans (one trace each) in bodies of {args.batch}; {load()}", flush=True)
    base, worker, counts, base_cpu = [], [], [], []
    for repeat in range(args.repeats):
        # alternating, so that a noisy neighbour hurts both alike, each first in every other pair (the
        # second run of a pair finds the bodies and the Python modules warm in the page cache)
        for sampling in (None, args.sampling) if repeat % 2 == 0 else (args.sampling, None):
            rate, found = run(args, bodies, sampling)
            if sampling is None:
                base.append(rate)
                base_cpu.append(found["cpu_us_per_span"])
            else:
                worker.append(rate)
                counts.append(found)
    kept = statistics.median(worker) / statistics.median(base)
    print(
        f"ingest with the worker at {args.sampling:.0%} sampling: {statistics.median(worker):,.0f} spans/s, "
        f"baseline {statistics.median(base):,.0f} spans/s: {kept:.1%} kept (target >= 95%); server CPU "
        f"until queryable {statistics.median(c['cpu_us_per_span'] for c in counts):.0f} us/span, baseline "
        f"{statistics.median(base_cpu):.0f} us/span"
    )
    sampled_total = sum(c["sampled"] for c in counts)
    items = sum(c["items"] for c in counts)
    within = sum(c["final_within_60s"] for c in counts)
    print(
        f"reliability over {args.repeats} runs: {sampled_total} sampled traces, {items} items queued "
        f"({sampled_total - items} lost), {within} final within 60 s of being queued: "
        f"{within / max(1, sampled_total):.2%} (target >= 99.9%)"
    )
    print(load())


if __name__ == "__main__":
    main()
