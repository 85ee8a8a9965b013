"""Statistics benchmark: one clustered bootstrap interval (``pilothouse.evals.stats``) over many items.

    python benchmarks/bootstrap.py [--items 10000] [--resamples 2000]

The gate computes one such interval per metric of a run; the figure is the median wall time of one call
over five rounds, on uniform values with one epoch per item. Baseline, measured in the same run: the
plain mean of the same values (``numpy.mean``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from pilothouse.evals.stats import clustered_bootstrap


def median_s(call: Callable[[], object], rounds: int = 5) -> float:
    """Median over rounds of one call's wall time, in seconds."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    values = np.random.default_rng(0).random(args.items)
    by_item = {str(i): [float(v)] for i, v in enumerate(values)}
    bootstrap = median_s(lambda: clustered_bootstrap(by_item, resamples=args.resamples))
    mean = median_s(lambda: np.mean(values))
    print(f"clustered_bootstrap, {args.items} items x {args.resamples} resamples: {bootstrap * 1e3:.1f} ms")
    print(f"baseline numpy.mean of the same values: {mean * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
