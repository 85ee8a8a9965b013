"""Simulations of the canary's sequential test, through its own function
(pilothouse.evals.gate.sequential_compare, what the canary controller calls at every check), printed
as the Markdown table of docs/gate.md ("Canaries: the gate made sequential").

    .venv/bin/python benchmarks/canary_simulations.py            # the table of docs/gate.md (~1 min)
    .venv/bin/python benchmarks/canary_simulations.py --quick    # a tenth of the replications

Each replication feeds both arms the same number of traces (a canary at half the traffic; at a tenth
only the time to reach a count changes) and looks every ``--every`` traces per arm until the test
decides or ``--max`` traces per arm. The baseline, measured in the same run, is the fixed-horizon
one-sided two-proportion z test at the same alpha with the traces per arm it needs for 80% and 90%
power. Seeds are fixed: the output is reproducible. A share p from R replications is within about
2 sqrt(p (1 - p) / R) of its long-run value. tests/unit/evals/test_canary_simulation.py runs --quick.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from pilothouse.evals.gate import ArmSummary, GateVerdict, fixed_horizon_n, sequential_compare

ALPHA = 0.05
MARGIN = 0.02
MIN_SAMPLES = 100


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one scenario's replications decided, and after how many traces per arm."""

    rollbacks: int
    promotions: int
    undecided: int
    rollback_ns: list[int]
    promotion_ns: list[int]


def simulate(
    *,
    control: float,
    canary: float,
    reps: int,
    every: int,
    most: int,
    seed: int,
    binary: bool = True,
) -> Outcome:
    """Run ``reps`` canaries with the given true pass rates (or, ``binary`` False, Beta-distributed
    means on [0, 1] with those means) and count the test's decisions."""
    rng = np.random.default_rng(seed)
    rollbacks: list[int] = []
    promotions: list[int] = []
    undecided = 0
    looks = np.arange(every, most + 1, every)
    for _ in range(reps):
        a, b = _values(rng, control, most, binary), _values(rng, canary, most, binary)
        sums_a, sums_b = np.cumsum(a), np.cumsum(b)
        squares_a, squares_b = np.cumsum(a * a), np.cumsum(b * b)
        for n in looks:
            i = n - 1
            result = sequential_compare(
                ArmSummary(int(n), float(sums_a[i]), float(squares_a[i])),
                ArmSummary(int(n), float(sums_b[i]), float(squares_b[i])),
                margin=MARGIN,
                alpha=ALPHA,
                min_samples=MIN_SAMPLES,
            )
            if result.verdict is GateVerdict.REGRESSION:
                rollbacks.append(int(n))
                break
            if result.verdict is GateVerdict.PASS:
                promotions.append(int(n))
                break
        else:
            undecided += 1
    return Outcome(len(rollbacks), len(promotions), undecided, rollbacks, promotions)


def _values(rng: np.random.Generator, mean: float, n: int, binary: bool) -> npt.NDArray[np.float64]:
    if binary:
        return (rng.random(n) < mean).astype(np.float64)
    concentration = 4.0  # a judge's 0..1 score: Beta(4 m, 4 (1 - m))
    return rng.beta(concentration * mean, concentration * (1 - mean), n)


def fixed_horizon_power(control: float, canary: float, n: int, reps: int, seed: int) -> float:
    """The baseline, simulated: the share of fixed-horizon z tests at ``n`` per arm that reject."""
    rng = np.random.default_rng(seed)
    a = rng.binomial(n, control, reps) / n
    b = rng.binomial(n, canary, reps) / n
    pooled = (a + b) / 2
    se = np.sqrt(np.maximum(2 * pooled * (1 - pooled) / n, 1e-12))
    return float(np.mean((a - b) / se > NormalDist().inv_cdf(1 - ALPHA)))


def _quantile(values: list[int], q: float) -> str:
    return "-" if not values else f"{int(np.quantile(values, q)):,}"


def main() -> None:
    """Print the table (Markdown) with the load average."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the replications")
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=25, help="traces per arm between looks")
    parser.add_argument("--max", type=int, default=20_000, help="traces per arm before giving up")
    args = parser.parse_args()
    reps = max(20, args.reps // 10) if args.quick else args.reps
    started = time.perf_counter()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\nalpha {ALPHA}, margin {MARGIN}, at least {MIN_SAMPLES} traces per arm, a look every "
          f"{args.every} traces per arm, at most {args.max:,}; {reps} replications per row\n")  # fmt: skip
    print("| scenario | rolled back | promoted | undecided | traces/arm at decision: median | p90 |")
    print("|---|---|---|---|---|---|")
    rows = [
        ("A/A, pass rate 90%", 0.90, 0.90, True),
        ("A/A, judge score mean 0.7 (Beta)", 0.70, 0.70, False),
        ("regression 90% -> 85%", 0.90, 0.85, True),
        ("improvement 90% -> 92%", 0.90, 0.92, True),
    ]
    regression: Outcome | None = None
    for seed, (name, control, canary, binary) in enumerate(rows, start=1):
        out = simulate(
            control=control, canary=canary, reps=reps, every=args.every, most=args.max, seed=seed,
            binary=binary,
        )  # fmt: skip
        decided = out.rollback_ns if control > canary else out.promotion_ns
        shares = f"{out.rollbacks / reps:.1%} | {out.promotions / reps:.1%} | {out.undecided / reps:.1%}"
        print(f"| {name} | {shares} | {_quantile(decided, 0.5)} | {_quantile(decided, 0.9)} |")
        if control > canary:
            regression = out
    assert regression is not None
    n80 = fixed_horizon_n(0.90, 0.85, alpha=ALPHA, power=0.8)
    n90 = fixed_horizon_n(0.90, 0.85, alpha=ALPHA, power=0.9)
    median = float(np.quantile(regression.rollback_ns, 0.5)) if regression.rollback_ns else math.inf
    p90 = float(np.quantile(regression.rollback_ns, 0.9)) if regression.rollback_ns else math.inf
    print("\nBaseline (same run): the fixed-horizon one-sided z test at alpha 0.05, 90% -> 85%")
    print("| fixed-horizon test | traces per arm | its power, simulated | sequential / fixed |")
    print("|---|---|---|---|")
    for power, n, seq in ((0.8, n80, median), (0.9, n90, p90)):
        simulated = fixed_horizon_power(0.90, 0.85, n, reps * 10, seed=99)
        which = "median" if power == 0.8 else "p90"
        print(f"| power {power:.0%} | {n:,} | {simulated:.1%} | {which} {seq / n:.2f}x |")
    print(f"\nregression: median {median:,.0f} and p90 {p90:,.0f} traces per arm to roll back; "
          f"fixed horizon {n80:,} (80% power) and {n90:,} (90% power)")  # fmt: skip
    print(f"\nsimulated in {time.perf_counter() - started:.1f} s; "
          f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip


if __name__ == "__main__":
    main()
