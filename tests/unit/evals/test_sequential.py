"""The gate's sequential comparison of two arms (pilothouse.evals.gate.sequential_compare): the mixture
boundary solves its defining equation, is wider than a fixed-horizon bound and grows slowly; seeded
samples decide as they should; bad settings are refused. The error rates under repeated looks are
benchmarks/canary_simulations.py's (test_canary_simulation.py)."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest

from pilothouse.evals.gate import (
    ArmSummary,
    GateVerdict,
    fixed_horizon_n,
    mixture_boundary,
    sequential_compare,
)


def _mixture(z: float, r: float) -> float:
    a = r / (1 + r)
    return 2 / math.sqrt(1 + r) * math.exp(z * z * a / 2) * NormalDist().cdf(z * math.sqrt(a))


@pytest.mark.parametrize("r", [0.01, 1.0, 30.0, 1e4, 1e8])
def test_the_boundary_solves_the_mixture_equation(r: float) -> None:
    z = mixture_boundary(r, 0.05)
    assert _mixture(z, r) == pytest.approx(1 / 0.05, rel=1e-9)
    assert z > NormalDist().inv_cdf(0.95)  # always-valid costs width over one look's bound


def test_the_boundary_grows_like_the_root_of_a_logarithm() -> None:
    zs = [mixture_boundary(r, 0.05) for r in (10.0, 1e3, 1e5, 1e7)]
    assert zs == sorted(zs)
    assert zs[-1] < 5  # information 10^6 times larger costs less than two standard errors more
    assert mixture_boundary(1e3, 0.01) > mixture_boundary(1e3, 0.05)


def _arm(seed: int, rate: float, n: int) -> ArmSummary:
    rng = random.Random(seed)
    return ArmSummary.of(1.0 if rng.random() < rate else 0.0 for _ in range(n))


def test_seeded_arms_decide_as_they_should() -> None:
    control = _arm(1, 0.9, 1000)
    worse = sequential_compare(control, _arm(2, 0.8, 1000), margin=0.02)
    assert worse.verdict is GateVerdict.REGRESSION and worse.upper < 0 < control.mean
    better = sequential_compare(control, _arm(3, 0.95, 1000), margin=0.02)
    assert better.verdict is GateVerdict.PASS and better.lower > -0.02
    same = sequential_compare(control, _arm(4, 0.9, 1000), margin=0.02)
    assert same.verdict is GateVerdict.INCONCLUSIVE and same.lower < -0.02 < 0 < same.upper
    assert same.lower < same.delta < same.upper
    early = sequential_compare(_arm(5, 0.9, 99), _arm(6, 0.1, 99), margin=0.02)
    assert early.verdict is GateVerdict.INCONCLUSIVE and "deciding needs 100" in early.reason
    assert early.document()["lower"] is None  # unbounded before the minimum: JSON null


def test_means_and_pass_rates_are_summarised_alike() -> None:
    values = [0.2, 0.9, 0.4, 0.7]
    arm = ArmSummary.of(values)
    assert not arm.binary and arm.mean == pytest.approx(0.55)
    assert arm.variance == pytest.approx(sum((v - 0.55) ** 2 for v in values) / 3)
    passes = ArmSummary.of([1.0] * 50)
    assert passes.binary and 0 < passes.variance < 0.02  # never taken for certain
    constant = ArmSummary.of([3.0] * 200)
    result = sequential_compare(constant, constant, margin=0.1)
    assert result.verdict is GateVerdict.PASS and result.lower == result.upper == 0.0


def test_the_fixed_horizon_yardstick_needs_more_for_more_power_and_smaller_effects() -> None:
    assert fixed_horizon_n(0.9, 0.85, power=0.9) > fixed_horizon_n(0.9, 0.85, power=0.8)
    assert fixed_horizon_n(0.9, 0.88) > fixed_horizon_n(0.9, 0.85) > fixed_horizon_n(0.9, 0.8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"alpha": 0.7}, "alpha"), ({"margin": -0.1}, "margin"), ({"effect": 0.0}, "effect")],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    arm = ArmSummary.of([1.0, 0.0] * 100)
    with pytest.raises(ValueError, match=message):
        sequential_compare(arm, arm, **{"margin": 0.02, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("outlier", [1e160, 1e308, -1e308, math.inf, math.nan])
def test_a_score_too_large_to_square_decides_nothing(outlier: float) -> None:
    """An attacker's pass: one canary score of 1e160 overflowed the sum of squares, the variance came
    out 0 and the canary, worse on every other trace, was promoted."""
    control = ArmSummary.of([1.0] * 200)
    canary = ArmSummary.of([0.0] * 199 + [outlier])
    result = sequential_compare(control, canary, margin=0.05, min_samples=5)
    assert result.verdict is GateVerdict.INCONCLUSIVE and "not finite" in result.reason
    assert result.lower == -math.inf and result.upper == math.inf


def test_a_large_finite_score_widens_the_bounds_instead() -> None:
    control = ArmSummary.of([1.0] * 200)
    canary = ArmSummary.of([0.0] * 199 + [1e150])
    result = sequential_compare(control, canary, margin=0.05, min_samples=5)
    assert result.verdict is GateVerdict.INCONCLUSIVE and result.lower < -0.05 < 0 < result.upper
