"""The gate made sequential: an always-valid comparison of two independent arms (a canary against its
control) on per-trace scores, checked as often as one likes without inflating the error rates.

The difference of means ``d = mean(canary) - mean(control)`` (higher is better) gets a confidence
sequence from the normal-mixture martingale (Robbins 1970; Howard, Ramdas, McAuliffe and Sekhon 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences"; the mixture SPRT of Johari, Pekelis
and Walsh 2017): with ``V`` the variance of the estimate (``s_canary^2 / n_canary + s_control^2 /
n_control``) and the mixing scale ``tau`` (``effect`` standard deviations), ``r = tau^2 / V`` and the
one-sided boundary ``z*(r, alpha)`` solving

    2 / sqrt(1 + r) * exp(z^2 r / (2 (1 + r))) * Phi(z sqrt(r / (1 + r))) = 1 / alpha

(the half-normal mixture; Ville's inequality bounds by ``alpha`` the chance that it is ever crossed),
the bounds ``d_hat -/+ z* sqrt(V)`` hold at every look at once, each with probability ``1 - alpha``.
The decision, as the fixed-horizon gate's:

- **regression** (roll the canary back) when the upper bound is below 0: the canary is worse;
- **pass** (promote) when the lower bound is above ``-margin``: non-inferior at the margin;
- **inconclusive** (keep running) otherwise, or while an arm has fewer than ``min_samples`` traces
  (the normal approximation needs some).

A regression takes precedence when both hold at one look. The figures are pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from pilothouse.evals.gate._decision import GateVerdict

__all__ = [
    "DEFAULT_MIXTURE_EFFECT",
    "ArmSummary",
    "SequentialResult",
    "fixed_horizon_n",
    "mixture_boundary",
    "sequential_compare",
]

DEFAULT_MIXTURE_EFFECT = 0.15  # the mixture's scale in standard deviations: tuned to ~5 points at 90%
_NORMAL = NormalDist()
_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """One arm's per-trace values summarised: how many, their sum and their sum of squares."""

    n: int
    total: float
    total_squares: float

    @classmethod
    def of(cls, values: Iterable[float]) -> ArmSummary:
        """The summary of ``values`` (one per trace)."""
        n, total, squares = 0, 0.0, 0.0
        for value in values:
            n, total, squares = n + 1, total + value, squares + value * value
        return cls(n, total, squares)

    @property
    def mean(self) -> float:
        """The arm's mean (0 for an empty arm)."""
        return self.total / self.n if self.n else 0.0

    @property
    def binary(self) -> bool:
        """Whether every value is 0 or 1 (a pass rate): then the sum of squares equals the sum."""
        return self.n > 0 and abs(self.total_squares - self.total) <= 1e-9 * max(1.0, self.total)

    @property
    def variance(self) -> float:
        """The values' variance; for pass/fail values, that of a pass rate pulled half a trace toward
        one half, so that an arm that has only passed so far is not taken for certain."""
        if self.n == 0:
            return 0.0
        if self.binary:
            p = (self.total + 0.5) / (self.n + 1)
            return p * (1 - p)
        if self.n < 2:
            return 0.0
        return max(0.0, (self.total_squares - self.total * self.total / self.n) / (self.n - 1))


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """A look's figures and verdict (``pass``: promote, ``regression``: roll back)."""

    verdict: GateVerdict
    control: ArmSummary
    canary: ArmSummary
    delta: float  # canary mean - control mean
    lower: float  # always-valid one-sided lower bound of the difference (-inf before min_samples)
    upper: float  # ... and upper bound (+inf before min_samples)
    margin: float
    alpha: float
    reason: str

    def document(self) -> dict[str, Any]:
        """As JSON (what the audit list keeps with a decision; infinite bounds as null)."""
        return {
            "verdict": self.verdict.value,
            "control": {"n": self.control.n, "mean": _rounded(self.control.mean)},
            "canary": {"n": self.canary.n, "mean": _rounded(self.canary.mean)},
            "delta": _rounded(self.delta),
            "lower": _rounded(self.lower),
            "upper": _rounded(self.upper),
            "margin": self.margin,
            "alpha": self.alpha,
            "reason": self.reason,
        }


def _rounded(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def mixture_boundary(r: float, alpha: float) -> float:
    """``z*(r, alpha)``: the standardised one-sided boundary of the half-normal mixture at ``r``
    (the mixing variance over the estimate's variance); it grows like ``sqrt(log r)``."""
    if not (0 < alpha < 1) or not r > 0:
        raise ValueError("mixture_boundary needs 0 < alpha < 1 and r > 0")
    a = r / (1 + r)
    target = 0.5 * math.log1p(r) - math.log(2 * alpha)  # the log of the right side, moved over
    z = math.sqrt(2 * max(target, 1e-12) / a)
    for _ in range(60):  # z = sqrt(2 (target - log Phi(z sqrt a)) / a): a contraction, fast
        tail = 0.5 * math.erfc(-z * math.sqrt(a) / _SQRT2)
        following = math.sqrt(2 * max(target - math.log(tail), 1e-12) / a)
        if abs(following - z) < 1e-12:
            return following
        z = following
    return z


def sequential_compare(
    control: ArmSummary,
    canary: ArmSummary,
    *,
    margin: float,
    alpha: float = 0.05,
    min_samples: int = 100,
    effect: float = DEFAULT_MIXTURE_EFFECT,
) -> SequentialResult:
    """One look at a running comparison: the always-valid bounds of ``canary - control`` and the
    verdict (module docstring). Valid at every look, however many and whenever they are taken."""
    if not (0 < alpha < 0.5):
        raise ValueError("alpha must be between 0 and 0.5")
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError("the margin is a finite number >= 0")
    if not (effect > 0 and math.isfinite(effect)):
        raise ValueError("the mixture's effect is a finite number > 0")
    delta = canary.mean - control.mean
    fewest = min(control.n, canary.n)
    sums = (control.total, control.total_squares, canary.total, canary.total_squares)
    if not all(math.isfinite(value) for value in sums):  # a score too large to square: no variance
        return SequentialResult(
            GateVerdict.INCONCLUSIVE, control, canary, delta, -math.inf, math.inf, margin, alpha,
            "the scores' sums or squares are not finite numbers (a score too large or not a number): "
            "nothing can be decided from them",
        )  # fmt: skip
    if fewest < max(2, min_samples):
        return SequentialResult(
            GateVerdict.INCONCLUSIVE, control, canary, delta, -math.inf, math.inf, margin, alpha,
            f"{fewest} traces in the smaller arm; deciding needs {max(2, min_samples)}",
        )  # fmt: skip
    variance = control.variance / control.n + canary.variance / canary.n
    pooled = (control.n * control.variance + canary.n * canary.variance) / (control.n + canary.n)
    if not (math.isfinite(variance) and math.isfinite(pooled) and math.isfinite(delta)):
        return SequentialResult(
            GateVerdict.INCONCLUSIVE, control, canary, delta, -math.inf, math.inf, margin, alpha,
            "the scores' spread is not a finite number (scores too large): nothing can be decided",
        )  # fmt: skip
    if variance <= 0:  # every value equal in both arms: no spread, the difference is what it is
        lower = upper = delta
    else:
        r = max(effect * effect * pooled / variance, 1e-12)
        width = mixture_boundary(r, alpha) * math.sqrt(variance)
        lower, upper = delta - width, delta + width
    if upper < 0:
        verdict, reason = GateVerdict.REGRESSION, f"the canary is worse: d <= {upper:+.4f} < 0"
    elif lower > -margin:
        verdict, reason = GateVerdict.PASS, f"non-inferior: d >= {lower:+.4f} > -{margin:g}"
    else:
        verdict, reason = (
            GateVerdict.INCONCLUSIVE,
            f"d in [{lower:+.4f}, {upper:+.4f}]: neither below 0 nor above -{margin:g} yet",
        )
    return SequentialResult(verdict, control, canary, delta, lower, upper, margin, alpha, reason)


def fixed_horizon_n(p_control: float, p_canary: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Traces per arm a fixed-horizon one-sided two-proportion z test at ``alpha`` needs to detect
    ``p_canary < p_control`` with ``power`` (equal arms): the yardstick of the sequential test."""
    if not (0 < p_canary < p_control < 1):
        raise ValueError("fixed_horizon_n needs 0 < p_canary < p_control < 1")
    z_a, z_b = _NORMAL.inv_cdf(1 - alpha), _NORMAL.inv_cdf(power)
    mean = (p_control + p_canary) / 2
    spread = z_a * math.sqrt(2 * mean * (1 - mean)) + z_b * math.sqrt(
        p_control * (1 - p_control) + p_canary * (1 - p_canary)
    )
    return math.ceil((spread / (p_control - p_canary)) ** 2)
