"""The gate's tests, as pure functions: mid-p McNemar, the exact unconditional non-inferiority test for
paired pass/fail data, sign-flip randomization tests (exact, Monte Carlo, or t for many differences),
the Clopper-Pearson bound for "nothing differed", Holm's step-down adjustment and alpha spending over
looks. Every p-value is one-sided; small means evidence *for* the alternative named by the function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from pilothouse.evals.stats import _normal_cdf, _regularized_beta, _student_t_cdf, _tango_restricted_mle

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Up to this many non-zero differences the sign-flip test enumerates every flip (2**20 sums).
SIGN_FLIP_EXACT_MAX = 20
# From this many non-zero differences a t test replaces the Monte-Carlo sign-flip test (for speed):
# benchmarks/gate_simulations.py shows its size holds there.
SIGN_FLIP_T_FROM = 200
SIGN_FLIP_RESAMPLES = 9_999
# Up to this many paired items the pass test of single-epoch pass/fail data is the exact unconditional
# test; above, Tango's asymptotic score test (benchmarks/gate_simulations.py: its size holds there).
EXACT_UNCONDITIONAL_MAX = 300
_NUISANCE_GRID = 200

EXACT_SIGN_FLIP = "exact sign-flip test"
MONTE_CARLO_SIGN_FLIP = "Monte-Carlo sign-flip test"
T_TEST = "t test"
JOHNSON_T = "skewness-corrected t test (Johnson, made monotone by Hall)"
MID_P_MCNEMAR = "mid-p McNemar"
EXACT_UNCONDITIONAL = "exact unconditional (Tango score)"
TANGO_SCORE = "Tango score test"
CLOPPER_PEARSON = "Clopper-Pearson bound (no difference)"
EMPIRICAL_BERNSTEIN = "empirical Bernstein bound (few changed items)"


def look_alpha(alpha: float, look: int) -> float:
    """The share of ``alpha`` that look ``look`` (1, 2, ...) of one baseline/candidate pair may spend:
    0.9 alpha at the first look, then 0.1 alpha halved at every further look (the shares sum to alpha,
    so the error rates hold however often a pair is looked at)."""
    if look < 1:
        raise ValueError(f"looks are numbered from 1, not {look}")
    return 0.9 * alpha if look == 1 else 0.1 * alpha * 2.0 ** -(look - 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan stays nan and counts as 1)."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i] if math.isfinite(p_values[i]) else 2.0)
    adjusted = [math.nan] * k
    running = 0.0
    for rank, i in enumerate(order):
        p = p_values[i]
        if not math.isfinite(p):
            continue
        running = max(running, min(1.0, (k - rank) * p))
        adjusted[i] = running
    return adjusted


def clopper_pearson_upper(successes: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) upper Clopper-Pearson bound of a proportion (closed form at 0 successes,
    bisection on the binomial tail otherwise)."""
    if n <= 0:
        return 1.0
    if successes == 0:
        return 1.0 - float(alpha ** (1.0 / n))
    if successes >= n:
        return 1.0

    def tail(p: float) -> float:  # P(X <= successes) at p = I_(1-p)(n - successes, successes + 1)
        return _regularized_beta(1 - p, n - successes, successes + 1)

    lo, hi = successes / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if tail(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def mid_p_mcnemar(decreases: int, increases: int) -> tuple[float, float]:
    """One-sided mid-p McNemar p-values (of a decrease, of an increase): P(X > k) + P(X = k) / 2 with
    X ~ Binomial(discordant, 1/2). Less conservative than the exact test; its size stays below alpha
    (benchmarks/gate_simulations.py)."""
    n = decreases + increases
    if n == 0:
        return 0.5, 0.5

    def mid(k: int) -> float:
        upper = _binomial_half_tail(k, n)  # P(X >= k)
        return upper - math.comb(n, k) / (1 << n) / 2 if n <= 1000 else upper - _binom_pmf_half(k, n) / 2

    return mid(decreases), mid(increases)


def _binomial_half_tail(k: int, n: int) -> float:
    """P(X >= k), X ~ Binomial(n, 1/2): exact up to 1,000 trials, a continuity-corrected normal above."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if n > 1000:
        return _normal_cdf(-(k - 0.5 - n / 2) / math.sqrt(n / 4))
    term = math.comb(n, k)
    total = 0
    for i in range(k, n + 1):
        total += term
        term = term * (n - i) // (i + 1)
    return total / (1 << n)


def _binom_pmf_half(k: int, n: int) -> float:
    return math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2))


def tango_score(decreases: int, increases: int, n: int, delta0: float) -> float:
    """Tango's score statistic for H0: P(increase) - P(decrease) == delta0 (large: the difference is
    above delta0)."""
    pb = _tango_restricted_mle(decreases, increases, n, delta0)
    var = n * (2 * pb + delta0 * (1 - delta0))
    num = increases - decreases - n * delta0
    if var <= 0:
        return math.copysign(math.inf, num) if num else 0.0
    return num / math.sqrt(var)


def binary_noninferiority_p(decreases: int, increases: int, n: int, margin: float) -> tuple[float, str]:
    """p-value of H0 "the candidate's pass rate is at least ``margin`` lower" on paired single-epoch
    pass/fail data, and the test's name: the exact unconditional test ordered by Tango's score (the
    largest tail probability over the nuisance discordance rate) up to
    :data:`EXACT_UNCONDITIONAL_MAX` items, Tango's asymptotic score test above."""
    if margin <= 0:
        # H0 "delta <= 0": the one-sided McNemar test of an increase decides it
        return _binomial_half_tail(increases, decreases + increases) if increases else 1.0, EXACT_SIGN_FLIP
    if n <= EXACT_UNCONDITIONAL_MAX:
        table = _unconditional_table(n, round(margin, 12))
        return float(table[decreases, increases]), EXACT_UNCONDITIONAL
    return 1.0 - _normal_cdf(tango_score(decreases, increases, n, -margin)), TANGO_SCORE


@lru_cache(maxsize=64)
def _unconditional_table(n: int, margin: float) -> npt.NDArray[np.float64]:
    """p[b, c] of the exact unconditional test for every table of n items (b decreases, c increases):
    max over the nuisance P(decrease) = t on the boundary P(increase) = t - margin of
    P_t(score >= observed score)."""
    import numpy as np

    b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    ok = b + c <= n
    bs, cs = b[ok], c[ok]
    score = _tango_scores(bs, cs, n, -margin)
    order = np.argsort(-score, kind="stable")
    sorted_score = score[order]
    # cells tied on the score share the tail that includes all of them
    last_of_tie = np.searchsorted(-sorted_score, -sorted_score, side="right") - 1
    from math import lgamma

    log_fact = np.array([lgamma(i + 1) for i in range(n + 1)])
    log_coef = log_fact[n] - log_fact[bs] - log_fact[cs] - log_fact[n - bs - cs]
    pvals = np.zeros(len(bs))
    hi = (1 + margin) / 2
    for t in np.linspace(margin, hi, _NUISANCE_GRID):
        p_dec, p_inc, p_same = t, max(t - margin, 0.0), max(1 - 2 * t + margin, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = (
                log_coef
                + np.where(bs > 0, bs * np.log(p_dec if p_dec > 0 else 1e-300), 0.0)
                + np.where(cs > 0, cs * np.log(p_inc if p_inc > 0 else 1e-300), 0.0)
                + np.where(n - bs - cs > 0, (n - bs - cs) * np.log(p_same if p_same > 0 else 1e-300), 0.0)
            )
        prob = np.exp(logp)[order]
        tail = np.cumsum(prob)[last_of_tie]
        np.maximum(pvals, tail, out=pvals)
    table = np.ones((n + 1, n + 1))
    result = np.empty(len(bs))
    result[order] = np.minimum(pvals, 1.0)
    table[bs, cs] = result
    return table


def _tango_scores(
    b: npt.NDArray[np.int64], c: npt.NDArray[np.int64], n: int, delta0: float
) -> npt.NDArray[np.float64]:
    """Tango's score for many tables at once (vectorised :func:`tango_score`)."""
    import numpy as np

    bf, cf = b.astype(np.float64), c.astype(np.float64)
    m = n - bf - cf
    lo, hi = max(0.0, -delta0), (1 - delta0) / 2
    coef = bf * (1 - 3 * delta0) + cf * (1 - delta0) - 2 * m * delta0
    disc = np.maximum(0.0, coef * coef + 8 * n * bf * delta0 * (1 - delta0))
    cands = [np.clip((coef + s * np.sqrt(disc)) / (4 * n), lo, hi) for s in (1.0, -1.0)]
    cands += [np.full_like(bf, lo), np.full_like(bf, hi)]

    def loglik(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        total = np.zeros_like(x)
        for count, prob in ((bf, x), (cf, x + delta0), (m, 1 - 2 * x - delta0)):
            with np.errstate(divide="ignore", invalid="ignore"):
                term = np.where(count > 0, count * np.log(np.where(prob > 0, prob, np.nan)), 0.0)
            total = total + np.where(np.isnan(term), -np.inf, term)
        return total

    liks = np.stack([loglik(x) for x in cands])
    pb = np.stack(cands)[np.argmax(liks, axis=0), np.arange(len(bf))]
    var = n * (2 * pb + delta0 * (1 - delta0))
    num = cf - bf - n * delta0
    with np.errstate(divide="ignore", invalid="ignore"):
        score = num / np.sqrt(var)
    return np.where(var > 0, score, np.where(num > 0, np.inf, np.where(num < 0, -np.inf, 0.0)))


@lru_cache(maxsize=4)
def _random_signs(seed: int) -> npt.NDArray[np.float64]:
    """Rademacher signs, SIGN_FLIP_T_FROM x SIGN_FLIP_RESAMPLES, drawn once per seed: a Monte-Carlo
    test on k values uses the first k rows (independent fair signs, so the test is as valid as with a
    fresh draw, and the same data always gets the same p-value)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    signs = rng.integers(0, 2, size=(SIGN_FLIP_T_FROM, SIGN_FLIP_RESAMPLES), dtype=np.int8) * 2 - 1
    return np.ascontiguousarray(signs, dtype=np.float64)


def sign_flip_p(values: npt.NDArray[np.float64], *, seed: int = 0) -> tuple[float, float, str]:
    """One-sided p-values that the values' mean is below 0 and above 0 (symmetry about 0 under H0),
    and the test: exact enumeration of the sign flips of up to :data:`SIGN_FLIP_EXACT_MAX` non-zero
    values, a seeded Monte-Carlo sign-flip test (p = (1 + k) / (1 + B)) below
    :data:`SIGN_FLIP_T_FROM`, a t test from there (its size holds there and it is fast)."""
    import numpy as np

    nonzero = values[values != 0.0]
    k = len(nonzero)
    if k == 0:
        return 1.0, 1.0, EXACT_SIGN_FLIP
    observed = float(nonzero.sum())
    tol = 1e-9 * float(np.abs(nonzero).sum())
    if k <= SIGN_FLIP_EXACT_MAX:
        sums = np.zeros(1)
        for d in nonzero.tolist():
            sums = np.concatenate([sums + d, sums - d])
        total = len(sums)
        return (
            int(np.count_nonzero(sums <= observed + tol)) / total,
            int(np.count_nonzero(sums >= observed - tol)) / total,
            EXACT_SIGN_FLIP,
        )
    if k < SIGN_FLIP_T_FROM:
        sums = nonzero @ _random_signs(seed)[:k]
        below = int(np.count_nonzero(sums <= observed + tol))
        above = int(np.count_nonzero(sums >= observed - tol))
        resamples = SIGN_FLIP_RESAMPLES + 1
        return (1 + below) / resamples, (1 + above) / resamples, MONTE_CARLO_SIGN_FLIP
    n = len(values)
    mean = float(values.mean())
    sd = float(values.std(ddof=1))
    if sd == 0.0:
        return (0.0, 1.0, T_TEST) if mean < 0 else (1.0, 0.0, T_TEST)
    t = mean / (sd / math.sqrt(n))
    return _student_t_cdf(t, n - 1), _student_t_cdf(-t, n - 1), T_TEST


def shifted_above_p(values: npt.NDArray[np.float64], *, seed: int = 0) -> tuple[float, str]:
    """One-sided p-value that the mean of ``values`` (differences already shifted by the margin) is
    above 0, and the test: the sign-flip test below :data:`SIGN_FLIP_T_FROM` non-zero values, and
    from there Johnson's skewness-corrected t with Hall's monotone term, because shifted differences
    are skewed (most items do not move, so they sit at +margin) and the plain t test then passes too
    often (6.4% at the margin with 1,000 judge scores at 90% agreement, benchmarks/gate_simulations.py)."""
    import numpy as np

    nonzero = int(np.count_nonzero(values)) if len(values) else 0
    if nonzero < SIGN_FLIP_T_FROM:
        _, above, test = sign_flip_p(values, seed=seed)
        return above, test
    n = len(values)
    mean = float(values.mean())
    sd = float(values.std(ddof=1))
    if sd == 0.0:
        return (0.0 if mean > 0 else 1.0), JOHNSON_T
    gamma = float(((values - mean) ** 3).mean()) / sd**3  # skewness of the differences
    t = mean / (sd / math.sqrt(n))
    # Johnson's correction t + gamma (1 + 2 t^2) / (6 sqrt n) turns back on itself for large |t| (a
    # candidate far below the margin would pass); Hall's cubic term makes it monotone in t (its
    # derivative is (1 + gamma t / (3 sqrt n))^2) and changes nothing to first order near the bound.
    root_n = math.sqrt(n)
    corrected = t + gamma * (1 + 2 * t * t) / (6 * root_n) + gamma * gamma * t**3 / (27 * n)
    return _student_t_cdf(-corrected, n - 1), JOHNSON_T


def empirical_bernstein_p(values: npt.NDArray[np.float64], width: float) -> float:
    """One-sided p-value that the mean of ``values`` (independent, within an interval of ``width``) is
    above 0, from the empirical Bernstein bound of Maurer and Pontil (2009, theorem 4): with
    probability 1 - p the mean is at least ``x - sqrt(2 V L / n) - 7 width L / (3 (n - 1))`` with
    ``L = ln(2 / p)``. It holds at every n like Hoeffding's bound, but uses the sample variance, so
    a few changed items among many (a small variance) can still clear the margin."""
    n = len(values)
    mean = float(values.mean()) if n else 0.0
    if n < 2 or mean <= 0 or width <= 0:
        return 1.0
    a = 7 * width / (3 * (n - 1))
    b = math.sqrt(2 * float(values.var(ddof=1)) / n)
    root = (-b + math.sqrt(b * b + 4 * a * mean)) / (2 * a)  # sqrt(L) where the bound is 0
    return min(1.0, 2 * math.exp(-root * root))
