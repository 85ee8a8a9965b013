"""Change detection for monitors, as pure functions: no I/O, no clock; randomness only from a generator
passed in.

Two detectors, each a one-sided CUSUM whose threshold is set for a target in-control average run length
(ARL0, samples between false alarms):

- :class:`BernoulliCusum` for pass rates and error rates, on each 0/1 sample: the log-likelihood ratio
  of "rate ``p1``" against the baseline "rate ``p0``" summed and clipped at zero (Page 1954; Reynolds and
  Stoumbos 1999). Its threshold comes from the exact ARL of the discretised statistic, computed as a
  Markov chain (Brook and Evans 1972), searched by bisection (:func:`design_bernoulli`).
- :class:`GaussianCusum` for continuous series (score means, latency p95, cost and tokens per request),
  on values standardised by the trailing baseline's mean and standard deviation, with reference ``k``
  (half the shift to detect, in standard deviations) and the threshold from Siegmund's approximation
  of the ARL (:func:`gaussian_threshold`).

``benchmarks/monitor_simulation.py`` measures the false-alarm rate and the detection delays of both by
simulation, next to a fixed one-hour threshold alert (:func:`hourly_threshold_run`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class BernoulliCusum:
    """A CUSUM for a rate moving from ``p0`` (the baseline) to ``p1``: each sample adds its
    log-likelihood ratio, rounded to whole units of ``1 / scale`` (so that the run length computed for
    it is exact, not approximate), the statistic is clipped at zero and alarms past ``h`` units.
    ``p1 < p0`` watches a drop (a pass rate), ``p1 > p0`` a rise (an error rate); feed it True for the
    event whose rate is ``p`` (a pass, an error)."""

    p0: float
    p1: float
    h: int
    scale: float

    @property
    def weights(self) -> tuple[int, int]:
        """What one event and one non-event add to the statistic, in units."""
        return _unit_weights(self.p0, self.p1, self.scale)

    def step(self, statistic: float, event: bool) -> float:
        """The statistic after one sample."""
        one, zero = self.weights
        return max(0.0, statistic + (one if event else zero))

    def update(self, statistic: float, events: int, trials: int) -> float:
        """The statistic after a batch of ``trials`` samples of which ``events`` were events, added at
        once (a minute's calls of a rollup bucket; the order inside the batch is not known)."""
        one, zero = self.weights
        return max(0.0, statistic + events * one + (trials - events) * zero)

    def alarms(self, statistic: float) -> bool:
        """True when the statistic is past the threshold."""
        return statistic > self.h


def _check_rates(p0: float, p1: float) -> None:
    if not (0 < p0 < 1 and 0 < p1 < 1) or p0 == p1:
        raise ValueError("p0 and p1 must be distinct rates strictly between 0 and 1")


def _unit_weights(p0: float, p1: float, scale: float) -> tuple[int, int]:
    one, zero = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    return round(one * scale), round(zero * scale)


def _scale_for(p0: float, p1: float) -> float:
    """Units per nat: the smaller weight becomes 8 units (rounding moves it by 6% at most), unless the
    larger would pass 60 units (a rate near 0 or 1): then the larger is 80, so that the threshold stays
    a few hundred units and its run length a quick computation. Either way the run length computed is
    that of the rounded weights the detector uses."""
    one, zero = abs(math.log(p1 / p0)), abs(math.log((1 - p1) / (1 - p0)))
    return min(8 / min(one, zero), 60 / max(one, zero))


def bernoulli_arl(p: float, p0: float, p1: float, h: int, scale: float) -> float:
    """The average run length (samples until the statistic passes ``h``, from zero) of a
    :class:`BernoulliCusum` when the true rate is ``p``: exact, as an absorbing Markov chain over the
    statistic's whole-unit values (Brook and Evans 1972)."""
    import numpy as np

    _check_rates(p0, p1)
    one, zero = _unit_weights(p0, p1, scale)
    if one == 0 or zero == 0:
        raise ValueError("these rates are too close to 0 or 1 to watch")
    states = h + 1  # 0 .. h; past h alarms
    index = np.arange(states)
    system = np.eye(states)  # I - Q, banded: a step moves the statistic by one weight or to zero
    for weight, chance in ((one, p), (zero, 1 - p)):
        target = np.maximum(0, index + weight)
        inside = target <= h
        system[index[inside], target[inside]] -= chance  # one target per row and weight
    return float(_solve_banded(system, max(0, -min(one, zero)), max(0, one, zero))[0])


def _solve_banded(system: NDArray[np.float64], lower: int, upper: int) -> NDArray[np.float64]:
    """``system @ x = 1`` for a matrix with ``lower`` diagonals under its main one and ``upper`` above,
    by Gaussian elimination inside the band. No pivoting is needed: ``I - Q`` of a substochastic ``Q``
    is an M-matrix. A few milliseconds for a thousand states, without LAPACK's threads (which a busy
    machine slows a hundredfold)."""
    import numpy as np

    a = system.copy()
    n = len(a)
    b = np.ones(n)
    for i in range(n - 1):
        rows = slice(i + 1, min(n, i + lower + 1))
        cols = slice(i, min(n, i + upper + 1))
        factors = a[rows, i] / a[i, i]
        if factors.any():
            a[rows, cols] -= np.outer(factors, a[i, cols])
            b[rows] -= factors * b[i]
    x = np.zeros(n)
    for i in range(n - 1, -1, -1):
        end = min(n, i + upper + 1)
        x[i] = (b[i] - a[i, i + 1 : end] @ x[i + 1 : end]) / a[i, i]
    return x


_MAX_STATES = 3000


def design_bernoulli(p0: float, shift: float, arl0: float) -> BernoulliCusum:
    """The CUSUM that watches a rate ``p0`` for a change of ``shift`` (negative: a drop), with the
    smallest threshold whose in-control ARL (true rate ``p0``) is at least ``arl0`` samples. ``p0`` is
    kept inside [0.5%, 99.5%] so that a baseline of all passes (or no errors) still has finite weights."""
    if not arl0 > 1:
        raise ValueError("the target run length must be more than one sample")
    p0 = min(0.995, max(0.005, p0))
    p1 = min(0.999, max(0.001, p0 + shift))
    if abs(p1 - p0) < 1e-3:
        raise ValueError("the shift to detect is too small for this baseline rate")
    scale = _scale_for(p0, p1)
    while True:  # a coarser scale (fewer states) when the threshold would need too many
        h = _smallest_threshold(p0, p1, scale, arl0)
        if h is not None:
            return BernoulliCusum(p0, p1, h, scale)
        scale /= 2
        if 0 in _unit_weights(p0, p1, scale):
            raise ValueError("no threshold reaches that run length for this shift; detect a larger one")


def _smallest_threshold(p0: float, p1: float, scale: float, arl0: float) -> int | None:
    """The smallest ``h`` whose in-control ARL reaches ``arl0`` (None: not within the states allowed)."""
    arl: dict[int, float] = {}

    def arl_of(h: int) -> float:
        if h not in arl:
            arl[h] = bernoulli_arl(p0, p0, p1, h, scale)
        return arl[h]

    low, high = 1, max(abs(w) for w in _unit_weights(p0, p1, scale))
    while arl_of(high) < arl0:
        low, high = high, high * 2
        if high > _MAX_STATES:
            return None
    # the log of the ARL grows about linearly with h, so interpolate it (a few solves), halving the
    # bracket instead whenever interpolation gains less than half of it
    halve = False
    while high - low > 1:
        if halve or arl_of(low) <= 0:
            mid = (low + high) // 2
        else:
            slope = (math.log(arl_of(high)) - math.log(arl_of(low))) / (high - low)
            guess = low + (math.log(arl0) - math.log(arl_of(low))) / slope if slope > 0 else (low + high) / 2
            mid = min(high - 1, max(low + 1, round(guess)))
        width = high - low
        low, high = (mid, high) if arl_of(mid) < arl0 else (low, mid)
        halve = high - low > width / 2 and not halve
    return high


@dataclass(frozen=True, slots=True)
class GaussianCusum:
    """A one-sided CUSUM on standardised values ``z = sign * (x - mean) / sd``: the statistic is
    ``max(0, S + z - k)``, alarming past ``h``. ``sign`` is +1 to watch a rise, -1 a drop."""

    mean: float
    sd: float
    k: float
    h: float
    sign: int = 1

    def step(self, statistic: float, value: float) -> float:
        """The statistic after one value (standardised here; clipped at +-8 sd so that one wild value
        cannot alarm alone)."""
        z = self.sign * (value - self.mean) / self.sd if self.sd > 0 else 0.0
        return max(0.0, statistic + max(-8.0, min(8.0, z)) - self.k)


def gaussian_arl(k: float, h: float, shift: float = 0.0) -> float:
    """Siegmund's approximation of a standardised CUSUM's ARL when the mean is ``shift`` sd away."""
    delta = shift - k
    b = h + 1.166
    if abs(delta) < 1e-9:
        return b * b
    return (math.exp(-2 * delta * b) + 2 * delta * b - 1) / (2 * delta * delta)


def gaussian_threshold(k: float, arl0: float) -> float:
    """The threshold whose in-control ARL (Siegmund) is ``arl0`` samples."""
    if not arl0 > 1:
        raise ValueError("the target run length must be more than one sample")
    low, high = 0.0, 1.0
    while gaussian_arl(k, high) < arl0:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if gaussian_arl(k, mid) < arl0 else (low, mid)
    return high


# -- simulation (vectorised over independent streams) ------------------------------------------------


def cusum_run(
    detector: BernoulliCusum, samples: NDArray[np.bool_], change: NDArray[np.int64]
) -> tuple[NDArray[np.int64], int]:
    """Feed each row of ``samples`` (streams x time) to the detector, restarting it after every alarm.
    Returns, per stream, the delay (samples from ``change`` to the first alarm at or after it, -1 if
    none) and the number of alarms before the change (false alarms)."""
    import numpy as np

    one, zero = detector.weights
    streams, length = samples.shape
    statistic = np.zeros(streams)
    delay = np.full(streams, -1, dtype=np.int64)
    false_alarms = 0
    for t in range(length):
        statistic = np.maximum(0.0, statistic + np.where(samples[:, t], one, zero))
        alarm = statistic > detector.h
        if alarm.any():
            before = alarm & (t < change)
            false_alarms += int(before.sum())
            found = alarm & (t >= change) & (delay < 0)
            delay[found] = t - change[found] + 1
            statistic[alarm] = 0.0
    return delay, false_alarms


def hourly_threshold_run(
    samples: NDArray[np.bool_], change: NDArray[np.int64], per_hour: int, threshold: float
) -> tuple[NDArray[np.int64], int]:
    """The fixed alert "the last hour's rate is below ``threshold``", checked at the end of each hour
    of ``per_hour`` samples; the same answer as :func:`cusum_run`."""
    import numpy as np

    streams, length = samples.shape
    hours = length // per_hour
    rates = samples[:, : hours * per_hour].reshape(streams, hours, per_hour).mean(axis=2)
    end = (np.arange(hours) + 1) * per_hour - 1  # the sample at which each hour's check runs
    alarms = rates < threshold
    false_alarms = int((alarms & (end[None, :] < change[:, None])).sum())
    after = alarms & (end[None, :] >= change[:, None])
    first = np.where(after.any(axis=1), after.argmax(axis=1), -1)
    delay = np.where(first >= 0, end[first] - change + 1, -1)
    return delay.astype(np.int64), false_alarms


def hourly_threshold_for(p0: float, per_hour: int, false_alarms_per_sample: float) -> float:
    """The largest hourly threshold whose false-alarm rate at the baseline rate ``p0`` is at most
    ``false_alarms_per_sample`` (exact binomial tail)."""
    allowed = false_alarms_per_sample * per_hour  # alarms per hourly check
    tail = 0.0
    best = 0.0
    for passes in range(per_hour + 1):
        tail += math.comb(per_hour, passes) * p0**passes * (1 - p0) ** (per_hour - passes)
        if tail > allowed:
            break
        best = (passes + 1) / per_hour  # "rate < best" alarms on this many passes or fewer
    return best


def drifted_streams(
    rng: np.random.Generator, streams: int, length: int, p0: float, p1: float, change_at: NDArray[np.int64]
) -> NDArray[np.bool_]:
    """0/1 samples (streams x length): rate ``p0`` before each stream's change, ``p1`` from it on."""
    import numpy as np

    u = rng.random((streams, length))
    rate = np.where(np.arange(length)[None, :] < change_at[:, None], p0, p1)
    result: NDArray[np.bool_] = u < rate
    return result
