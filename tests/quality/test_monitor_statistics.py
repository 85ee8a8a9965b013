"""The monitors' change detection (pure): the threshold is the smallest whose exact in-control run length
reaches the target, the exact run lengths agree with simulation (seeded), a drop is seen sooner than a
false alarm comes, and the simulation of benchmarks/monitor_simulation.py meets issue 24's targets."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from pilothouse.quality.monitors import (
    BernoulliCusum,
    GaussianCusum,
    bernoulli_arl,
    design_bernoulli,
    gaussian_arl,
    gaussian_threshold,
)
from pilothouse.quality.monitors._statistics import hourly_threshold_for, hourly_threshold_run


def _run_lengths(detector: BernoulliCusum, p: float, streams: int, seed: int, cap: int) -> np.ndarray:
    """Samples until the first alarm, from zero, of streams whose rate is ``p``."""
    rng = np.random.default_rng(seed)
    one, zero = detector.weights
    statistic = np.zeros(streams)
    length = np.zeros(streams, dtype=np.int64)
    for t in range(1, cap + 1):
        statistic = np.maximum(0.0, statistic + np.where(rng.random(streams) < p, one, zero))
        fired = (statistic > detector.h) & (length == 0)
        length[fired] = t
        statistic[fired] = -np.inf  # stays stopped
        if (length > 0).all():
            break
    assert (length > 0).all(), "a stream ran past the cap"
    return length


def test_threshold_is_the_smallest_reaching_the_target() -> None:
    for p0, shift in ((0.9, -0.1), (0.02, 0.03)):
        d = design_bernoulli(p0, shift, 500)
        below = bernoulli_arl(p0, d.p0, d.p1, d.h - 1, d.scale)
        assert bernoulli_arl(p0, d.p0, d.p1, d.h, d.scale) >= 500 > below
        # a change is seen far sooner than a false alarm comes
        assert bernoulli_arl(d.p1, d.p0, d.p1, d.h, d.scale) < 500 / 5


def test_exact_run_lengths_agree_with_simulation() -> None:
    d = design_bernoulli(0.8, -0.2, 150)
    for p, seed in ((0.8, 1), (0.6, 2)):
        lengths = _run_lengths(d, p, 3000, seed, 5000)
        exact = bernoulli_arl(p, d.p0, d.p1, d.h, d.scale)
        error = lengths.std() / math.sqrt(len(lengths))
        assert abs(lengths.mean() - exact) < 4 * error, (p, lengths.mean(), exact)


def test_gaussian_threshold_against_simulation() -> None:
    k = 0.5
    h = gaussian_threshold(k, 100)
    assert gaussian_arl(k, h) == pytest.approx(100, rel=1e-6)
    rng = np.random.default_rng(3)
    statistic, length = np.zeros(3000), np.zeros(3000, dtype=np.int64)
    for t in range(1, 3000):
        statistic = np.maximum(0.0, statistic + rng.standard_normal(3000) - k)
        fired = (statistic > h) & (length == 0)
        length[fired] = t
        if (length > 0).all():
            break
    assert (length > 0).all()
    assert length.mean() == pytest.approx(100, rel=0.12)  # Siegmund's approximation, and Monte-Carlo error
    detector = GaussianCusum(mean=10.0, sd=2.0, k=k, h=h, sign=-1)  # watches a drop
    assert detector.step(0.0, 6.0) == pytest.approx(2 - k) and detector.step(0.0, 14.0) == 0.0
    assert detector.step(0.0, -1e9) == pytest.approx(8 - k)  # one wild value is clipped


def test_hourly_threshold_alert() -> None:
    threshold = hourly_threshold_for(0.9, 100, 1 / 5000)
    below = sum(math.comb(100, i) * 0.9**i * 0.1 ** (100 - i) for i in range(round(threshold * 100)))
    assert (
        below
        <= 100 / 5000
        < below
        + math.comb(100, round(threshold * 100))
        * 0.9 ** round(threshold * 100)
        * 0.1 ** (100 - round(threshold * 100))
    )
    samples = np.ones((2, 300), dtype=bool)
    samples[:, 150:] = False  # everything fails from sample 150
    delays, false_alarms = hourly_threshold_run(samples, np.array([150, 150]), 100, threshold)
    assert false_alarms == 0 and delays.tolist() == [50, 50]  # seen at the end of the second hour


def test_bad_designs_are_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        design_bernoulli(0.9, -0.0001, 1000)
    with pytest.raises(ValueError, match="more than one sample"):
        design_bernoulli(0.9, -0.1, 1)


@pytest.mark.slow  # tens of thousands of vectorised steps: seconds of CPU
def test_the_simulation_meets_the_targets() -> None:
    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    import monitor_simulation

    printed: list[str] = []
    rows = monitor_simulation.run(300, out=printed.append)
    assert any("| method |" in line for line in printed)
    known = rows[0]
    assert known.samples_per_false_alarm >= 5000 * 0.8  # Monte-Carlo slack on ~1,000 false alarms
    ten, five = known.delays[0.10], known.delays[0.05]
    assert (ten >= 0).all() and np.median(ten) <= 100 and np.percentile(ten, 90) <= 200
    assert np.median(five[five >= 0]) <= 350
