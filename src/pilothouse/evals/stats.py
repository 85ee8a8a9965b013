"""Statistics for evaluation runs: estimates with intervals, and paired comparisons of two runs.

Pure functions, no I/O. The unit of evidence is the *item*: repeats (epochs) of one item are averaged
first, so that running an item five times never counts as five independent observations.

Input shape everywhere: ``{item_id: [value per epoch, ...]}``; values are floats, 0.0/1.0 for pass/fail
metrics. Unmeasured epochs (errors, timeouts) are simply absent from the lists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

# numpy is imported inside the functions that compute with it: the evaluations service imports this
# module, and `pilothouse eval run`, which never compares, should not pay numpy's import time.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

ValuesByItem = Mapping[str, Sequence[float]]
ComparisonMethod = Literal["auto", "exact", "sign-flip", "t", "bootstrap"]

# Methods named in reports (PairedComparison.method).
EXACT_MCNEMAR = "exact McNemar"
SIGN_FLIP = "exact sign-flip test on item means"
PAIRED_T = "paired t on item means"
PAIRED_BOOTSTRAP = "paired bootstrap on item means"

_BOOTSTRAP_CELLS = 2_000_000  # resample indices held in memory at once (16 MB of int64)
SIGN_FLIP_MAX_ITEMS = 19  # below 20 paired items, enumerate all 2**n sign flips instead of a t test


@dataclass(frozen=True, slots=True)
class Estimate:
    """A mean over items with a two-sided confidence interval (``nan`` bounds when under two items)."""

    mean: float
    low: float
    high: float
    confidence: float
    n_items: int
    n_values: int


@dataclass(frozen=True, slots=True)
class McNemarResult:
    """Exact McNemar test on the discordant pairs of a paired pass/fail comparison.

    ``decreases`` counts items the baseline passed and the candidate failed, ``increases`` the reverse.
    Under "no difference" each discordant item is a fair coin flip between the two.
    """

    decreases: int
    increases: int
    p_two_sided: float
    p_decrease: float  # one-sided: evidence that the candidate's pass rate is lower
    p_increase: float  # one-sided: evidence that it is higher


@dataclass(frozen=True, slots=True)
class SignTestResult:
    """Exact sign test on paired differences; zero differences are set aside."""

    n_decrease: int
    n_increase: int
    n_zero: int
    p_two_sided: float
    p_decrease: float
    p_increase: float


@dataclass(frozen=True, slots=True)
class PairedComparison:
    """Candidate minus baseline over the items measured in both runs.

    ``delta`` is the mean over paired items of (candidate item mean - baseline item mean); ``low`` and
    ``high`` bound it at ``confidence`` (two-sided). The p-values are one-sided tests of ``delta == 0``
    against a decrease and against an increase, by ``method``.
    """

    n_items: int
    n_excluded: int  # items measured in only one of the two runs
    baseline_mean: float
    candidate_mean: float
    delta: float
    low: float
    high: float
    confidence: float
    p_decrease: float
    p_increase: float
    method: str
    sd_difference: float  # standard deviation of the per-item differences
    cohens_dz: float | None  # delta / sd_difference; None when the differences do not vary
    discordant: tuple[int, int] | None  # (decreases, increases) for single-epoch pass/fail data
    sign: SignTestResult
    all_differences_zero: bool


def item_means(values_by_item: ValuesByItem) -> dict[str, float]:
    """Each item's mean over its epochs; items without any measured value are left out."""
    return {item: math.fsum(values) / len(values) for item, values in values_by_item.items() if values}


def clustered_bootstrap(
    values_by_item: ValuesByItem, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Mean over items with a bootstrap interval that resamples items, not values.

    Each item counts once, through its mean over epochs, so repeats narrow an item's noise but never
    multiply the evidence. The interval is the percentile interval widened for small samples
    (Hesterberg's "expanded percentile"), which keeps close to its nominal coverage from about ten items.
    """
    import numpy as np

    _check_confidence(confidence)
    means_by_item = item_means(values_by_item)
    if not means_by_item:
        raise ValueError("no item has a measured value")
    n_values = sum(len(v) for v in values_by_item.values())
    means = np.array([means_by_item[k] for k in sorted(means_by_item)], dtype=np.float64)
    mean = math.fsum(means.tolist()) / len(means)
    low, high = _bootstrap_interval(means, mean, confidence, resamples, seed)
    return Estimate(mean, low, high, confidence, len(means), n_values)


def mcnemar_exact(decreases: int, increases: int) -> McNemarResult:
    """Exact (binomial) McNemar test from the two discordant counts.

    >>> round(mcnemar_exact(10, 2).p_decrease, 4)  # P(X >= 10), X ~ Binomial(12, 1/2) = 79/4096
    0.0193
    """
    if decreases < 0 or increases < 0:
        raise ValueError("discordant counts must be non-negative")
    n = decreases + increases
    p_decrease = _binomial_half_upper_tail(decreases, n)
    p_increase = _binomial_half_upper_tail(increases, n)
    return McNemarResult(
        decreases, increases, min(1.0, 2 * min(p_decrease, p_increase)), p_decrease, p_increase
    )


def sign_test(differences: Sequence[float]) -> SignTestResult:
    """Exact sign test: are negative paired differences more (or less) common than positive ones?"""
    n_decrease = sum(1 for d in differences if d < 0)
    n_increase = sum(1 for d in differences if d > 0)
    exact = mcnemar_exact(n_decrease, n_increase)
    return SignTestResult(
        n_decrease,
        n_increase,
        len(differences) - n_decrease - n_increase,
        exact.p_two_sided,
        exact.p_decrease,
        exact.p_increase,
    )


def paired_difference(
    baseline_by_item: ValuesByItem,
    candidate_by_item: ValuesByItem,
    *,
    confidence: float = 0.95,
    method: ComparisonMethod = "auto",
    resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two runs item by item: delta = candidate - baseline on per-item means.

    ``method="auto"`` picks the test that holds its error rate: for pass/fail values with exactly one
    epoch per item in both runs, the exact McNemar test with Tango's score interval for the paired
    difference of proportions; otherwise, on the per-item mean differences (repeats averaged first),
    the exact sign-flip randomization test for up to 19 items and a paired t test from 20 items.
    ``"bootstrap"`` is a paired bootstrap over items (expanded percentile interval), offered for
    comparison: it is liberal below ~50 items when differences are skewed.
    """
    import numpy as np

    _check_confidence(confidence)
    base = item_means(baseline_by_item)
    cand = item_means(candidate_by_item)
    paired = sorted(base.keys() & cand.keys())
    if not paired:
        raise ValueError("no item is measured in both runs")
    n_excluded = len(baseline_by_item.keys() | candidate_by_item.keys()) - len(paired)
    b = np.array([base[k] for k in paired], dtype=np.float64)
    c = np.array([cand[k] for k in paired], dtype=np.float64)
    diffs = c - b
    n = len(paired)
    delta = math.fsum(diffs.tolist()) / n
    all_zero = bool(np.all(diffs == 0.0))
    sign = sign_test(diffs.tolist())
    single_binary = all(
        len(baseline_by_item[k]) == 1
        and len(candidate_by_item[k]) == 1
        and baseline_by_item[k][0] in (0.0, 1.0)
        and candidate_by_item[k][0] in (0.0, 1.0)
        for k in paired
    )
    if method == "auto":
        method = "exact" if single_binary else "sign-flip" if n <= SIGN_FLIP_MAX_ITEMS else "t"
    if method == "exact" and not single_binary:
        raise ValueError("the exact method needs pass/fail values with one epoch per item")

    discordant: tuple[int, int] | None = None
    if method == "exact":
        decreases, increases = sign.n_decrease, sign.n_increase
        discordant = (decreases, increases)
        exact = mcnemar_exact(decreases, increases)
        p_decrease, p_increase = exact.p_decrease, exact.p_increase
        z = _normal_quantile(0.5 + confidence / 2)
        low, high = _tango_interval(decreases, increases, n, z)
        sd = math.sqrt(max(0.0, (decreases + increases) / n - delta * delta))
        label = EXACT_MCNEMAR
    else:
        sd = float(np.std(diffs, ddof=1)) if n > 1 else math.nan
        if method == "t":
            low, high, p_decrease, p_increase = _t_test(delta, sd, n, confidence)
            label = PAIRED_T
        elif method == "sign-flip":
            low, high, p_decrease, p_increase = _sign_flip_exact(diffs, confidence)
            label = SIGN_FLIP
        else:
            low, high = _bootstrap_interval(diffs, delta, confidence, resamples, seed)
            p_decrease, p_increase = _bootstrap_p_values(diffs, delta, resamples, seed)
            label = PAIRED_BOOTSTRAP
    if all_zero:
        low = high = 0.0
        p_decrease = p_increase = 1.0
    cohens_dz = delta / sd if sd > 0 else None
    return PairedComparison(
        n_items=n,
        n_excluded=n_excluded,
        baseline_mean=math.fsum(b.tolist()) / n,
        candidate_mean=math.fsum(c.tolist()) / n,
        delta=delta,
        low=low,
        high=high,
        confidence=confidence,
        p_decrease=p_decrease,
        p_increase=p_increase,
        method=label,
        sd_difference=sd,
        cohens_dz=cohens_dz,
        discordant=discordant,
        sign=sign,
        all_differences_zero=all_zero,
    )


# --- intervals and tests --------------------------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")


def _bootstrap_means(values: npt.NDArray[np.float64], resamples: int, seed: int) -> npt.NDArray[np.float64]:
    """Means of ``resamples`` resamples (with replacement) of ``values``, in memory-bounded chunks."""
    import numpy as np

    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    rng = np.random.default_rng(seed)
    n = len(values)
    chunk = max(1, _BOOTSTRAP_CELLS // n)
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        out[start : start + rows] = values[rng.integers(0, n, size=(rows, n))].mean(axis=1)
    return out


def _bootstrap_interval(
    values: npt.NDArray[np.float64], mean: float, confidence: float, resamples: int, seed: int
) -> tuple[float, float]:
    """Expanded percentile interval: percentiles at a level widened by sqrt(n/(n-1)) * t/z."""
    import numpy as np

    n = len(values)
    if n < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        return mean, mean
    tail = (1 - confidence) / 2
    widened = math.sqrt(n / (n - 1)) * _student_t_quantile(1 - tail, n - 1)
    tail = _normal_cdf(-widened)
    boot = _bootstrap_means(values, resamples, seed)
    low, high = np.quantile(boot, [tail, 1 - tail])
    return min(float(low), mean), max(float(high), mean)


def _bootstrap_p_values(
    diffs: npt.NDArray[np.float64], delta: float, resamples: int, seed: int
) -> tuple[float, float]:
    """One-sided p-values for delta == 0 from the bootstrap distribution shifted to the null."""
    import numpy as np

    boot = _bootstrap_means(diffs, resamples, seed) - delta
    p_decrease = (1 + int(np.count_nonzero(boot <= delta))) / (resamples + 1)
    p_increase = (1 + int(np.count_nonzero(boot >= delta))) / (resamples + 1)
    return p_decrease, p_increase


def _t_test(delta: float, sd: float, n: int, confidence: float) -> tuple[float, float, float, float]:
    """Paired t interval and one-sided p-values (low, high, p_decrease, p_increase)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan, math.nan, math.nan, math.nan
    if sd == 0.0:  # every item moved by exactly the same amount
        certain = 0.0 if delta != 0 else 1.0
        return delta, delta, certain if delta < 0 else 1.0, certain if delta > 0 else 1.0
    se = sd / math.sqrt(n)
    half = _student_t_quantile(0.5 + confidence / 2, n - 1) * se
    p_decrease = _student_t_cdf(delta / se, n - 1)
    return delta - half, delta + half, p_decrease, _student_t_cdf(-delta / se, n - 1)


def _sign_flip_exact(diffs: npt.NDArray[np.float64], confidence: float) -> tuple[float, float, float, float]:
    """Exact randomization test over all 2**n sign flips of the differences (low, high, p's).

    Flipping the items in a subset N lowers the total below the observed one exactly when the mean of
    the differences over N is above the hypothesised delta0. So the p-value at delta0 counts subset
    means on one side of delta0, and the interval's ends are order statistics of the 2**n - 1 subset
    means: test and interval agree by construction.
    """
    import numpy as np

    n = len(diffs)
    if n > SIGN_FLIP_MAX_ITEMS + 5:
        raise ValueError(f"the exact sign-flip test enumerates 2**n flips; {n} items is too many")
    sums, counts = np.zeros(1), np.zeros(1, dtype=np.int64)
    for d in diffs.tolist():
        sums, counts = np.concatenate([sums, sums + d]), np.concatenate([counts, counts + 1])
    means = sums[1:] / counts[1:]  # index 0 is the empty subset: no flip, the observed arrangement
    means[np.abs(means) < 1e-12] = 0.0  # exact zeros that float sums missed
    means.sort()
    total = len(means) + 1
    k = math.ceil((1 - confidence) / 2 * total - 1e-9) - 1  # subset means allowed beyond each bound
    low, high = (float(means[k - 1]), float(means[-k])) if k > 0 else (-math.inf, math.inf)
    p_decrease = (1 + int(np.count_nonzero(means >= 0))) / total
    p_increase = (1 + int(np.count_nonzero(means <= 0))) / total
    return low, high, p_decrease, p_increase


def _tango_interval(decreases: int, increases: int, n: int, z: float) -> tuple[float, float]:
    """Tango's (1998) score interval for a paired difference of proportions, by bisection.

    The bound at level z is the delta0 where the score statistic equals +z (low) or -z (high); the
    statistic falls as delta0 rises, so the lower-bound test "score(-margin) > z" is exactly
    "low > -margin".
    """
    estimate = (increases - decreases) / n

    def score(delta0: float) -> float:
        pb = _tango_restricted_mle(decreases, increases, n, delta0)
        var = n * (2 * pb + delta0 * (1 - delta0))
        num = increases - decreases - n * delta0
        if var <= 0:
            return math.copysign(math.inf, num) if num else 0.0
        return num / math.sqrt(var)

    def solve(lo: float, hi: float, target: float) -> float:
        # score(lo) >= target >= score(hi); find the crossing
        for _ in range(60):
            mid = (lo + hi) / 2
            if score(mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = -1.0 if score(-1.0) <= z else solve(-1.0, estimate, z)
    high = 1.0 if score(1.0) >= -z else solve(estimate, 1.0, -z)
    return min(low, estimate), max(high, estimate)


def _tango_restricted_mle(decreases: int, increases: int, n: int, delta0: float) -> float:
    """Maximum-likelihood P(decrease) given P(increase) - P(decrease) == delta0 (a quadratic's root)."""
    b, c, m = decreases, increases, n - decreases - increases
    lo, hi = max(0.0, -delta0), (1 - delta0) / 2
    coef = b * (1 - 3 * delta0) + c * (1 - delta0) - 2 * m * delta0
    disc = max(0.0, coef * coef + 8 * n * b * delta0 * (1 - delta0))
    roots = [(coef + s * math.sqrt(disc)) / (4 * n) for s in (1.0, -1.0)]
    candidates = [min(hi, max(lo, r)) for r in roots] + [lo, hi]

    def loglik(x: float) -> float:
        total = 0.0
        for count, prob in ((b, x), (c, x + delta0), (m, 1 - 2 * x - delta0)):
            if count:
                if prob <= 0:
                    return -math.inf
                total += count * math.log(prob)
        return total

    return max(candidates, key=loglik)


# --- distributions (no scipy) ---------------------------------------------------------------------------


def _binomial_half_upper_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly (integer arithmetic)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    term = math.comb(n, k)
    total = 0
    for i in range(k, n + 1):
        total += term
        term = term * (n - i) // (i + 1)
    return total / (1 << n)


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


# Acklam's rational approximation to the normal quantile, then one Halley step (full double precision).
_A = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690, -30.66479806614716)
_A5 = 2.506628274631000
_B = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572)
_C = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968)
_C5 = 2.938163982698783
_D = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)


def _normal_quantile(p: float) -> float:
    """x with P(Z <= x) == p for a standard normal Z."""
    if not 0.0 < p < 1.0:
        if p == 0.0:
            return -math.inf
        if p == 1.0:
            return math.inf
        raise ValueError(f"probability out of range: {p}")
    p_low = 0.02425
    if p < p_low or p > 1 - p_low:
        q = math.sqrt(-2 * math.log(min(p, 1 - p)))
        x = (((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C5) / (
            (((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1
        )
        x = x if p < p_low else -x
    else:
        q = p - 0.5
        r = q * q
        x = (((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A5) * q
        x /= ((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1
    err = _normal_cdf(x) - p
    u = err * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x - u / (1 + x * u / 2)


def _regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) by Lentz's continued fraction (Numerical Recipes' betacf)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _regularized_beta(1 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def _student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _regularized_beta(df / (df + t * t), df / 2, 0.5)
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=1024)
def _student_t_quantile(p: float, df: int) -> float:
    """t with P(T <= t) == p, by bisection on the cdf (cached: the gate asks for few distinct levels)."""
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -_student_t_quantile(1 - p, df)
    lo, hi = 0.0, max(1.0, 2 * _normal_quantile(p))
    while _student_t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if _student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2
