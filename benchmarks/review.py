"""Review-queue benchmark: reviewers working through a queue at once, on SQLite and PostgreSQL.

    python benchmarks/review.py [--items 400] [--reviewers 4] [--database-url postgresql://...]

Fills a queue with stored traces, then ``--reviewers`` threads each loop: claim the next item (the
lease's compare-and-set, plus reading the trace for the screen), submit one boolean answer. Prints the
claim and submit latency (p50, p95), items per second, and checks that no item was reviewed twice.
Baseline, measured in the same run on the same traces: reading a trace alone (``get_trace``, what
opening it on the trace page costs), so the lease's own cost is the difference. With no
``--database-url`` it runs on a temporary SQLite file and, when it answers, on the local PostgreSQL
(a scratch database, dropped afterwards).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.review.stored import write_trace

from pilothouse.quality.review import ReviewService
from pilothouse.store.sql import SqlStore

PG_ADMIN = os.environ.get("PILOTHOUSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1000, result


def run(url: str, label: str, items: int, reviewers: int) -> None:
    store = SqlStore.from_url(url)
    service = ReviewService(store)
    traces = [write_trace(store, "bench", f"question {i}", f"answer {i}", at=i) for i in range(items)]
    service.create_config("bench", "ok", "boolean")
    service.create_queue("bench", "q", ["ok"])
    service.add_traces("bench", "q", traces[:1000])
    for start in range(1000, len(traces), 1000):
        service.add_traces("bench", "q", traces[start : start + 1000])

    baseline = [_timed(lambda tid=tid: store.get_trace("bench", tid))[0] for tid in traces[: min(items, 200)]]
    claims: list[float] = []
    submits: list[float] = []
    reviewed: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while True:
            took, view = _timed(lambda: service.next_item("bench", "q", name))
            if view is None:
                return
            item_id = view.item.id  # type: ignore[attr-defined]
            spent, _ = _timed(lambda item_id=item_id: service.submit("bench", item_id, name, {"ok": True}))
            with lock:
                claims.append(took)
                submits.append(spent)
                reviewed.append(item_id)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(f"r{i}",)) for i in range(reviewers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    assert len(reviewed) == items and len(set(reviewed)) == items, "an item was reviewed twice or missed"
    print(f"{label}: {items} items, {reviewers} reviewers at once, {items / wall:.0f} items/s")
    for name, values in (
        ("claim next (lease + trace)", claims),
        ("submit", submits),
        ("baseline get_trace", baseline),
    ):
        p50, p95 = statistics.median(values), _pct(values, 0.95)
        print(f"  {name:<28} p50 {p50:6.2f} ms   p95 {p95:6.2f} ms   n {len(values)}")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--reviewers", type=int, default=4)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    if args.database_url:
        run(args.database_url, args.database_url.split(":", 1)[0], args.items, args.reviewers)
    else:
        with tempfile.TemporaryDirectory() as folder:
            run(f"sqlite:///{folder}/bench.db", "SQLite", args.items, args.reviewers)
        _postgres(args.items, args.reviewers)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def _postgres(items: int, reviewers: int) -> None:
    try:
        import psycopg

        name = f"bench_review_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except Exception as exc:  # no PostgreSQL here: say so and stop
        print(f"PostgreSQL: skipped ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        return
    try:
        run(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", "PostgreSQL", items, reviewers)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
