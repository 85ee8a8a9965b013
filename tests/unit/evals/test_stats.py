"""Estimates and paired tests, with numbers that can be checked by hand."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest

from pilothouse.evals.stats import (
    EXACT_MCNEMAR,
    PAIRED_BOOTSTRAP,
    PAIRED_T,
    SIGN_FLIP,
    _normal_quantile,
    _student_t_cdf,
    _student_t_quantile,
    _tango_interval,
    _tango_restricted_mle,
    clustered_bootstrap,
    item_means,
    mcnemar_exact,
    paired_difference,
    sign_test,
)


def by_item(values: list[float] | np.ndarray, epochs: int = 1) -> dict[str, list[float]]:
    """One item per value, each value repeated ``epochs`` times."""
    return {f"item-{i}": [float(v)] * epochs for i, v in enumerate(values)}


def pass_fail(
    decreases: int, increases: int, both_pass: int, both_fail: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Single-epoch baseline/candidate runs with the given 2x2 table."""
    pairs = (
        [(1.0, 0.0)] * decreases
        + [(0.0, 1.0)] * increases
        + [(1.0, 1.0)] * both_pass
        + [(0.0, 0.0)] * both_fail
    )
    base = {f"q{i}": [b] for i, (b, _) in enumerate(pairs)}
    cand = {f"q{i}": [c] for i, (_, c) in enumerate(pairs)}
    return base, cand


# --- distributions ---------------------------------------------------------------------------------------


def test_normal_and_t_quantiles_match_tables() -> None:
    assert _normal_quantile(0.975) == pytest.approx(1.959963985, abs=1e-9)
    assert _normal_quantile(0.95) == pytest.approx(1.644853627, abs=1e-9)
    assert _normal_quantile(1e-6) == pytest.approx(-4.753424309, abs=1e-8)
    assert _student_t_quantile(0.975, 10) == pytest.approx(2.228138852, abs=1e-8)
    assert _student_t_quantile(0.95, 1) == pytest.approx(6.313751515, abs=1e-7)
    assert _student_t_quantile(0.05, 29) == pytest.approx(-1.699127027, abs=1e-8)
    assert _student_t_cdf(2.0, 5) == pytest.approx(0.9490302605, abs=1e-9)


# --- exact tests -----------------------------------------------------------------------------------------


def test_mcnemar_exact_by_hand() -> None:
    # 12 discordant items, 10 went against the candidate: P(X >= 10 | Binomial(12, 1/2)) = (66+12+1)/4096
    result = mcnemar_exact(10, 2)
    assert result.p_decrease == 79 / 4096
    assert result.p_two_sided == 2 * 79 / 4096
    assert result.p_increase == 1 - (1 + 12) / 4096  # P(X >= 2)


def test_mcnemar_exact_without_discordant_pairs_is_no_evidence() -> None:
    result = mcnemar_exact(0, 0)
    assert (result.p_decrease, result.p_increase, result.p_two_sided) == (1.0, 1.0, 1.0)


def test_mcnemar_exact_handles_large_counts() -> None:
    # 5,000 discordant pairs split evenly: the one-sided p is just over a half
    assert 0.5 < mcnemar_exact(2500, 2500).p_decrease < 0.51
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_sign_test_sets_zeros_aside() -> None:
    result = sign_test([-1.0, -2.0, 0.0, 3.0])
    assert (result.n_decrease, result.n_increase, result.n_zero) == (2, 1, 1)
    assert result.p_decrease == 4 / 8  # P(X >= 2 | Binomial(3, 1/2))
    assert result.p_increase == 7 / 8


# --- clustered bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_interval_contains_the_true_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(3)
    small = clustered_bootstrap(by_item(rng.random(100) < 0.7), seed=1)
    large = clustered_bootstrap(by_item(rng.random(1600) < 0.7), seed=1)
    for est in (small, large):
        assert est.low < 0.7 < est.high
        assert est.low <= est.mean <= est.high
    # width goes as 1/sqrt(n): 16 times the items, a quarter of the width
    ratio = (small.high - small.low) / (large.high - large.low)
    assert 3.3 < ratio < 4.8
    assert (large.n_items, large.n_values, large.confidence) == (1600, 1600, 0.95)


def test_identical_repeats_do_not_narrow_the_interval() -> None:
    rng = np.random.default_rng(4)
    values = rng.random(200) < 0.6
    once = clustered_bootstrap(by_item(values, epochs=1), seed=5)
    ten_times = clustered_bootstrap(by_item(values, epochs=10), seed=5)
    assert (ten_times.mean, ten_times.low, ten_times.high) == (once.mean, once.low, once.high)
    assert ten_times.n_values == 10 * once.n_values


def test_noisy_repeats_narrow_far_less_than_independent_values_would() -> None:
    rng = np.random.default_rng(6)
    p = rng.beta(1, 1, 300)  # items of varying difficulty
    epochs = (rng.random((300, 10)) < p[:, None]).astype(float)
    clustered = clustered_bootstrap({f"i{i}": row.tolist() for i, row in enumerate(epochs)})
    naive = clustered_bootstrap({f"v{j}": [v] for j, v in enumerate(epochs.ravel())})
    one_epoch = clustered_bootstrap(by_item(epochs[:, 0]))
    width = clustered.high - clustered.low
    assert width > 1.6 * (naive.high - naive.low)  # 3,000 values taken as independent: overconfident
    assert width > 0.5 * (one_epoch.high - one_epoch.low)  # item difficulty dominates, repeats help little


def test_bootstrap_edge_cases() -> None:
    constant = clustered_bootstrap(by_item([1.0] * 20))
    assert (constant.low, constant.mean, constant.high) == (1.0, 1.0, 1.0)
    single = clustered_bootstrap({"only": [0.2, 0.4]})
    assert single.mean == pytest.approx(0.3) and math.isnan(single.low) and math.isnan(single.high)
    with pytest.raises(ValueError):
        clustered_bootstrap({"a": []})
    with pytest.raises(ValueError):
        clustered_bootstrap(by_item([1.0, 0.0]), confidence=1.5)


def test_bootstrap_weights_items_equally_not_values() -> None:
    est = clustered_bootstrap({"a": [1.0, 1.0, 1.0, 1.0], "b": [0.0]})
    assert est.mean == 0.5
    assert item_means({"a": [1.0, 0.0], "b": []}) == {"a": 0.5}


def test_bootstrap_on_ten_thousand_items() -> None:
    # its speed is measured by benchmarks/bootstrap.py
    values = by_item(np.random.default_rng(0).random(10_000))
    est = clustered_bootstrap(values, resamples=2000)
    assert (est.n_items, est.n_values) == (10_000, 10_000)
    # uniform values: the mean is near 1/2, and the 95% interval spans about 2 x 1.96 x sqrt(1/12) / 100
    assert est.low < est.mean < est.high and est.mean == pytest.approx(0.5, abs=0.01)
    assert est.high - est.low == pytest.approx(2 * 1.96 * math.sqrt(1 / 12) / 100, rel=0.15)


# --- paired comparisons ----------------------------------------------------------------------------------


def test_single_epoch_pass_fail_uses_exact_mcnemar() -> None:
    base, cand = pass_fail(decreases=10, increases=2, both_pass=60, both_fail=28)
    c = paired_difference(base, cand, confidence=0.90)
    assert c.method == EXACT_MCNEMAR
    assert c.discordant == (10, 2)
    assert c.delta == pytest.approx(-0.08)  # risk difference: (2 - 10) / 100
    assert c.p_decrease == 79 / 4096
    assert c.low < -0.08 < c.high < 0
    assert c.baseline_mean == pytest.approx(0.70) and c.candidate_mean == pytest.approx(0.62)
    assert c.sd_difference == pytest.approx(math.sqrt(0.12 - 0.08**2))
    assert c.cohens_dz == pytest.approx(-0.08 / math.sqrt(0.12 - 0.08**2))


def test_tango_interval_is_close_to_wald_for_large_n_and_mirrors() -> None:
    z = _normal_quantile(0.975)
    low, high = _tango_interval(150, 100, 2000, z)
    delta, se = -0.025, math.sqrt((250 / 2000 - 0.025**2) / 2000)
    assert low == pytest.approx(delta - z * se, abs=0.001)
    assert high == pytest.approx(delta + z * se, abs=0.001)
    mirrored = _tango_interval(100, 150, 2000, z)
    assert mirrored == pytest.approx((-high, -low), abs=1e-9)
    # no discordant pairs: still an honest interval around zero, not a point
    none_low, none_high = _tango_interval(0, 0, 10, z)
    assert none_low < -0.1 and none_high > 0.1


def test_tango_restricted_mle_maximises_the_likelihood() -> None:
    b, c, n, delta0 = 7, 2, 40, -0.1
    x = _tango_restricted_mle(b, c, n, delta0)
    grid = np.linspace(max(0.0, -delta0) + 1e-9, (1 - delta0) / 2 - 1e-9, 100_001)
    loglik = b * np.log(grid) + c * np.log(grid + delta0) + (n - b - c) * np.log(1 - 2 * grid - delta0)
    assert x == pytest.approx(float(grid[np.argmax(loglik)]), abs=1e-4)


def test_repeats_use_item_means_and_do_not_add_evidence() -> None:
    base, cand = pass_fail(decreases=10, increases=2, both_pass=60, both_fail=28)
    once = paired_difference(base, cand, confidence=0.9, method="t")
    repeated = paired_difference(
        {k: v * 5 for k, v in base.items()}, {k: v * 5 for k, v in cand.items()}, confidence=0.9
    )
    assert repeated.method == PAIRED_T
    assert (repeated.p_decrease, repeated.low, repeated.high) == (once.p_decrease, once.low, once.high)


def test_paired_t_on_continuous_values_by_hand() -> None:
    base = {"a": [1.0], "b": [2.0], "c": [3.0], "d": [4.0]}
    cand = {"a": [0.5], "b": [2.0], "c": [2.0], "d": [3.5]}  # differences -0.5, 0, -1, -0.5
    c = paired_difference(base, cand, confidence=0.90, method="t")
    sd = math.sqrt(((0.0) ** 2 + 0.5**2 + 0.5**2 + 0.0**2) / 3)  # around the mean -0.5
    t = -0.5 / (sd / 2)
    assert c.delta == -0.5 and c.sd_difference == pytest.approx(sd)
    assert c.p_decrease == pytest.approx(_student_t_cdf(t, 3))
    assert c.high == pytest.approx(-0.5 + _student_t_quantile(0.95, 3) * sd / 2)
    assert c.cohens_dz == pytest.approx(-0.5 / sd)


def test_pairing_excludes_items_missing_from_either_run() -> None:
    base = {"a": [1.0], "b": [0.0], "c": [1.0], "gone": []}
    cand = {"a": [1.0], "b": [1.0], "new": [0.0]}
    c = paired_difference(base, cand)
    assert c.n_items == 2 and c.n_excluded == 3  # c, gone, new
    with pytest.raises(ValueError):
        paired_difference({"a": [1.0]}, {"b": [1.0]})


def test_identical_runs_give_an_exact_zero() -> None:
    base = {f"i{i}": [float(i % 3), float(i % 2)] for i in range(30)}
    c = paired_difference(base, dict(base))
    assert c.all_differences_zero and c.delta == 0.0
    assert (c.low, c.high, c.p_decrease, c.p_increase) == (0.0, 0.0, 1.0, 1.0)
    assert c.cohens_dz is None


def test_paired_bootstrap_is_available_for_comparison() -> None:
    rng = np.random.default_rng(9)
    base = rng.normal(0, 1, 200)
    c = paired_difference(by_item(base), by_item(base - 0.3 + rng.normal(0, 0.5, 200)), method="bootstrap")
    assert c.method == PAIRED_BOOTSTRAP
    assert c.low < -0.3 < c.high < 0 and c.p_decrease < 0.01 < 0.99 < c.p_increase
    with pytest.raises(ValueError):
        paired_difference(by_item(base), by_item(base), method="exact")  # not pass/fail data


def test_few_items_use_the_exact_sign_flip_test() -> None:
    diffs = [-1.0, -2.0, -3.0, -4.0, 5.0]
    base = {f"i{i}": [0.0] for i in range(5)}
    cand = {f"i{i}": [d] for i, d in enumerate(diffs)}
    c = paired_difference(base, cand, confidence=0.9)
    assert c.method == SIGN_FLIP
    # by enumeration: 10 of the 32 sign flips give a total at or below the observed -5
    flips = [sum(s * d for s, d in zip(signs, diffs, strict=True)) for signs in product((1, -1), repeat=5)]
    assert c.p_decrease == sum(total <= -5 for total in flips) / 32 == 10 / 32
    assert c.p_increase == sum(total >= -5 for total in flips) / 32
    # all five worse: the smallest p-value five items can give, 1/32 < 0.05, and the bound agrees
    worse = paired_difference(base, {k: [-1.0 - i] for i, k in enumerate(base)}, confidence=0.9)
    assert worse.p_decrease == 1 / 32 and worse.high < 0
    # four items cannot show anything at 5%: 1/16 > 0.05, and the interval is unbounded
    four = paired_difference({k: base[k] for k in list(base)[:4]}, {k: [-1.0] for k in list(base)[:4]})
    assert four.p_decrease == 1 / 16 and math.isinf(four.high)


def test_sign_flip_bounds_agree_with_its_p_values() -> None:
    rng = np.random.default_rng(12)
    for _ in range(50):
        n = int(rng.integers(5, 20))
        diffs = np.round(rng.normal(-0.3, 1, n), 1)
        c = paired_difference(
            {f"i{i}": [0.0] for i in range(n)},
            {f"i{i}": [float(d)] for i, d in enumerate(diffs)},
            confidence=0.9,
        )
        assert (c.p_decrease < 0.05) == (c.high < 0)
        assert (c.p_increase < 0.05) == (c.low > 0)
