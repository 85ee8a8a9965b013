"""In-process SQLite write rate of benchmarks/query.py's spans (30 days, 500 users, a third of the calls
streamed, a fifth saving on a cache), through ``SqlStore.write_spans`` in batches of 5,000:

    python benchmarks/write_rate.py [--spans 60000]

Prints spans/s by the wall clock, this process's CPU per span, stored bytes per span and the load
average. Compare two checkouts by running it alternately with ``PYTHONPATH`` naming each one's ``src``
(the spans come from this file's checkout).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from query import fill

import pilothouse
from pilothouse.store.sql import SqlStore


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--spans", type=int, default=60_000)
    args = parser.parse_args()
    path = os.path.join(tempfile.mkdtemp(prefix="ph-rate-"), "rate.db")
    store = SqlStore.from_url(f"sqlite:///{path}")
    cpu, started = _cpu_s(), time.perf_counter()
    fill(store, args.spans, time.time_ns())
    wall, cpu = time.perf_counter() - started, _cpu_s() - cpu
    store.close()
    size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    code = Path(pilothouse.__file__).parent.parent
    print(
        f"{code}: {args.spans:,} spans, {args.spans / wall:,.0f} spans/s, "
        f"{cpu / args.spans * 1e6:.0f} us CPU per span, {size / args.spans:,.0f} B per span, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    os.remove(path)


if __name__ == "__main__":
    main()
