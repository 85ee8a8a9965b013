"""The gate's decision: one pure function, :func:`decide`, from the values of every gated metric of two
runs to a verdict per metric and overall. Every entry point (through the evaluations service) and the
simulations of benchmarks/gate_simulations.py call it, so what is measured is what users run.

Per metric, on the items measured in both runs (oriented so that a positive difference is better):

- **pass** (non-inferiority at the look's alpha) when the test of "the candidate is at least the margin
  worse" rejects on the pairs *with the candidate's unmeasured items scored at their worst*: the exact
  unconditional test (Tango's score) on single-epoch pass/fail data (Tango's asymptotic test above 300
  items), the sign-flip test of the differences shifted by the margin otherwise, and, when every
  difference is zero, the exact bound on the share of items that differ (Clopper-Pearson);
- **regression** when the one-sided test of "the candidate is worse" on the measured pairs (mid-p
  McNemar, or the sign-flip test) rejects after Holm's adjustment over the gated metrics, or when the
  candidate measured no item the baseline measured;
- **inconclusive** otherwise, with the paired items (or groups) the next look needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from pilothouse.evals.gate._inference import (
    CLOPPER_PEARSON,
    EMPIRICAL_BERNSTEIN,
    MID_P_MCNEMAR,
    binary_noninferiority_p,
    clopper_pearson_upper,
    empirical_bernstein_p,
    holm,
    look_alpha,
    mid_p_mcnemar,
    shifted_above_p,
    sign_flip_p,
)
from pilothouse.evals.stats import (
    SIGN_FLIP_MAX_ITEMS,
    Estimate,
    PairedComparison,
    SignTestResult,
    ValuesByItem,
    _normal_quantile,
    _sign_flip_exact,
    _student_t_quantile,
    _t_test,
    _tango_interval,
    clustered_bootstrap,
    mcnemar_exact,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MetricKind = Literal["binary", "continuous"]

DEFAULT_ALPHA = 0.05
DEFAULT_BINARY_MARGIN = 0.02  # two percentage points of pass rate
DEFAULT_RELATIVE_MARGIN = 0.02  # continuous metrics: 2% of the baseline's mean
BOOTSTRAP_MAX_ITEMS = 2000  # per-run intervals: the clustered bootstrap up to here, a t interval above
PLANNING_POWER = 0.85
PLANNING_BOUND = 0.8  # ... for the discordance or spread at this one-sided upper confidence bound
# The pass test of repeated or continuous data: the sign-flip test of the differences shifted by the
# margin from this many changed items (or groups); the empirical Bernstein bound below
# (benchmarks/gate_simulations.py).
SHIFTED_SIGN_FLIP_MIN = 20  # items_needed: the next look passes an unchanged candidate with this probability


class GateVerdict(StrEnum):
    """What the gate concludes, for one metric or for the whole comparison."""

    PASS = "pass"
    REGRESSION = "regression"
    INCONCLUSIVE = "inconclusive"

    @property
    def exit_code(self) -> int:
        """Process exit status: 0 pass, 1 regression, 3 inconclusive (2 is the CLI's usage error)."""
        return {GateVerdict.PASS: 0, GateVerdict.REGRESSION: 1, GateVerdict.INCONCLUSIVE: 3}[self]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric as the gate sees it: ``binary`` values are 0.0/1.0 (pass/fail), others ``continuous``."""

    name: str
    kind: MetricKind
    higher_is_better: bool = True


@dataclass(frozen=True, slots=True)
class MetricValues:
    """One run's values of one metric: ``{item_id: [value per epoch]}``, how many values were
    unmeasured (errors, timeouts, unparseable judge replies) and the items they belong to."""

    by_item: ValuesByItem
    unmeasured: int = 0
    unmeasured_items: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Margin:
    """The largest acceptable loss: absolute on the metric's scale, or ``relative`` (a share of the
    baseline's failure rate for a pass/fail metric, of the baseline's mean for a continuous one)."""

    value: float
    relative: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"must be a number >= 0, not {self.value}")

    def absolute(self, metric: MetricSpec, baseline_mean: float) -> float:
        """The margin on the metric's scale, given the baseline's mean."""
        if not self.relative:
            return self.value
        if not math.isfinite(baseline_mean):
            return 0.0
        if metric.kind == "binary":
            bad = 1 - baseline_mean if metric.higher_is_better else baseline_mean
            return self.value * bad
        return self.value * abs(baseline_mean)

    def __str__(self) -> str:
        return f"{100 * self.value:g}%" if self.relative else f"{self.value:g}"


@dataclass(frozen=True, slots=True)
class MetricInput:
    """One gated metric: its values in both runs, its margin (None: :func:`default_margin`) and, to
    test at the level of groups of related items, each item's group."""

    metric: MetricSpec
    baseline: MetricValues
    candidate: MetricValues
    margin: float | Margin | None = None
    groups: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class MetricResult:
    """The gate's finding for one metric, with the numbers behind it."""

    metric: MetricSpec
    verdict: GateVerdict
    baseline: Estimate | None  # over every item measured in the baseline run
    candidate: Estimate | None  # over every item measured in the candidate run
    comparison: PairedComparison | None  # measured pairs; None when no item is measured in both runs
    margin: float
    alpha: float  # the overall level
    look_alpha: float  # what this look spends of it
    n_excluded: int  # items measured in only one run, left out (the candidate's unmeasured: imputed)
    unmeasured_baseline: int
    unmeasured_candidate: int
    n_imputed: int  # items the baseline measured and the candidate could not: scored at their worst
    worst_delta: float  # delta with those items at the metric's worst value (what the pass test uses)
    p_value: float  # one-sided p of "the candidate is worse" (raw), measured pairs
    p_adjusted: float  # Holm-adjusted over the gated metrics
    p_pass: float  # one-sided p of "the candidate is at least the margin worse" (worst case)
    regression_test: str
    pass_test: str
    n_groups: int | None  # grouped: the groups tested
    items_needed: int | None  # inconclusive only: paired items (groups, when grouped) for the next look
    explanation: str

    @property
    def delta(self) -> float:
        """Candidate minus baseline over the measured pairs, on the metric's own scale."""
        return self.comparison.delta if self.comparison else math.nan

    @property
    def delta_low(self) -> float:
        """Lower end of the delta's (1 - 2 look_alpha) two-sided interval."""
        return self.comparison.low if self.comparison else math.nan

    @property
    def delta_high(self) -> float:
        """Upper end of the delta's (1 - 2 look_alpha) two-sided interval."""
        return self.comparison.high if self.comparison else math.nan

    @property
    def test(self) -> str:
        """The tests behind the verdict, in words."""
        if self.comparison is None and not self.n_imputed:
            return "none (no paired items)"
        grouped = f", on {self.n_groups} groups" if self.n_groups is not None else ""
        return f"regression: {self.regression_test}; pass: {self.pass_test}{grouped}"

    @property
    def n_paired(self) -> int:
        """Items measured in both runs."""
        return self.comparison.n_items if self.comparison else 0


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The verdict on every gated metric and overall, at one look of a baseline/candidate pair."""

    results: tuple[MetricResult, ...]
    verdict: GateVerdict
    alpha: float
    look: int = 1
    look_alpha: float = field(default=math.nan)

    @property
    def exit_code(self) -> int:
        """0 pass, 1 regression, 3 inconclusive."""
        return self.verdict.exit_code


def default_margin(metric: MetricSpec, baseline_mean: float) -> float:
    """The margin used when none is given: 2 points for pass rates, 2% of the baseline mean otherwise."""
    if metric.kind == "binary":
        return DEFAULT_BINARY_MARGIN
    return DEFAULT_RELATIVE_MARGIN * abs(baseline_mean) if math.isfinite(baseline_mean) else 0.0


def overall_verdict(results: Sequence[MetricResult]) -> GateVerdict:
    """Any regression -> regression; else any inconclusive -> inconclusive; else pass."""
    if not results:
        raise ValueError("no metric to gate on")
    verdicts = {r.verdict for r in results}
    for verdict in (GateVerdict.REGRESSION, GateVerdict.INCONCLUSIVE):
        if verdict in verdicts:
            return verdict
    return GateVerdict.PASS


@dataclass
class _Tested:
    """One metric's tests before the multiplicity adjustment."""

    entry: MetricInput
    margin: float
    base_est: Estimate | None
    cand_est: Estimate | None
    comparison: PairedComparison | None = None
    n_excluded: int = 0
    n_imputed: int = 0
    worst_delta: float = math.nan
    p_value: float = math.nan
    p_pass: float = math.nan
    regression_test: str = "none"
    pass_test: str = "none"
    n_groups: int | None = None
    nothing_measured: bool = False  # the candidate measured none of the baseline's items
    units: int = 0  # items (or groups) the pass test used
    discordance: float | None = None  # binary single-epoch: share of discordant items (worst case)
    sd: float = math.nan  # SD of the (worst-case) differences or group means
    spread: float = 1.0  # the metric's range (all-zero differences)
    all_zero: bool = False


def decide(
    metrics: Sequence[MetricInput],
    *,
    alpha: float = DEFAULT_ALPHA,
    look: int = 1,
    resamples: int = 2000,
    seed: int = 0,
    estimates: bool = True,
) -> GateDecision:
    """The gate on every metric of a comparison at look ``look`` of the baseline/candidate pair
    (spending :func:`look_alpha` of ``alpha``). Raises ValueError on invalid input. ``resamples`` only
    concerns the per-run intervals of the report, never the verdict; ``seed`` seeds
    the Monte-Carlo sign-flip tests. ``estimates`` False leaves out the per-run intervals and the
    delta's interval (the simulations do: they need the verdicts only)."""
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be between 0 and 0.5, not {alpha}")
    if not metrics:
        raise ValueError("no metric to gate on")
    level = look_alpha(alpha, look)
    tested = [_test(entry, level, alpha, resamples, seed, estimates) for entry in metrics]
    adjusted = holm([0.0 if t.nothing_measured else t.p_value for t in tested])
    results = tuple(
        _result(t, p_adj, alpha, level, look_alpha(alpha, look + 1))
        for t, p_adj in zip(tested, adjusted, strict=True)
    )
    return GateDecision(results, overall_verdict(results), alpha, look, level)


def compare_metric(
    metric: MetricSpec,
    baseline: MetricValues,
    candidate: MetricValues,
    *,
    margin: float | Margin | None = None,
    alpha: float = DEFAULT_ALPHA,
    look: int = 1,
    resamples: int = 2000,
    seed: int = 0,
) -> MetricResult:
    """The gate on one metric alone (:func:`decide` with a single metric)."""
    entry = MetricInput(metric, baseline, candidate, margin)
    return decide([entry], alpha=alpha, look=look, resamples=resamples, seed=seed).results[0]


@dataclass
class _Run:
    """One run's values of one metric, summarised in one pass: item means, whether every item's
    epochs agree, and the range of the values."""

    means: dict[str, float]
    deterministic: bool
    low: float
    high: float


def _summarise(metric: MetricSpec, by_item: ValuesByItem) -> _Run:
    import itertools

    import numpy as np

    means: dict[str, float] = {}
    deterministic = True
    for item, values in by_item.items():
        if not values:
            continue
        if len(values) == 1:
            means[item] = values[0]
            continue
        means[item] = math.fsum(values) / len(values)
        if deterministic and any(v != values[0] for v in values):
            deterministic = False
    flat = np.fromiter(itertools.chain.from_iterable(by_item.values()), dtype=np.float64)
    bad = ~np.isfinite(flat)
    if metric.kind == "binary":
        bad |= (flat != 0.0) & (flat != 1.0)
    if bad.any():
        _check_values(metric, by_item)  # names the item
    low = float(flat.min()) if len(flat) else math.nan
    high = float(flat.max()) if len(flat) else math.nan
    return _Run(means, deterministic, low, high)


def _check_values(metric: MetricSpec, by_item: ValuesByItem) -> None:
    for item, values in by_item.items():
        for v in values:
            if not math.isfinite(v):
                raise ValueError(f"{metric.name}: item {item!r} has a non-finite value {v}")
            if metric.kind == "binary" and v not in (0.0, 1.0):
                raise ValueError(f"{metric.name} is binary but item {item!r} has the value {v}")


def _test(
    entry: MetricInput, level: float, alpha: float, resamples: int, seed: int, estimates: bool
) -> _Tested:
    import numpy as np

    metric, baseline, candidate = entry.metric, entry.baseline, entry.candidate
    if isinstance(entry.margin, float | int) and not (math.isfinite(entry.margin) and entry.margin >= 0):
        raise ValueError(f"margin must be a non-negative number, not {entry.margin}")
    base_run, cand_run = _summarise(metric, baseline.by_item), _summarise(metric, candidate.by_item)
    base_means, cand_means = base_run.means, cand_run.means
    base_est = cand_est = None
    if estimates:
        base_est = _estimate(baseline.by_item, base_means, 1 - alpha, resamples, seed)
        cand_est = _estimate(candidate.by_item, cand_means, 1 - alpha, resamples, seed)
    base_mean = math.fsum(base_means.values()) / len(base_means) if base_means else math.nan
    margin = entry.margin
    if margin is None:
        margin_value = default_margin(metric, base_mean)
    elif isinstance(margin, Margin):
        margin_value = margin.absolute(metric, base_mean)
    else:
        margin_value = float(margin)
    t = _Tested(entry, margin_value, base_est, cand_est)

    # every item's epochs agree in both runs: repeats add nothing, the data are one epoch
    single = base_run.deterministic and cand_run.deterministic
    paired = sorted(base_means.keys() & cand_means.keys())
    # every item the baseline measured and the candidate did not (an error, or an item it was not run
    # on: a candidate run on the items it passes must not pass) is scored at its worst for the pass test
    # (unless the runs share no item at all: then there is nothing to compare, not a broken candidate)
    imputed = sorted(base_means.keys() - cand_means.keys()) if paired or not cand_means else []
    t.n_imputed = len(imputed)
    t.n_excluded = len(base_means) + len(cand_means) - 2 * len(paired) - len(imputed)
    if not paired and not imputed:
        return t
    sign = 1.0 if metric.higher_is_better else -1.0
    if metric.kind == "binary":
        worst, t.spread = (0.0 if metric.higher_is_better else 1.0), 1.0
    else:
        lows = [x for x in (base_run.low, cand_run.low) if math.isfinite(x)]
        highs = [x for x in (base_run.high, cand_run.high) if math.isfinite(x)]
        worst = min(lows) if metric.higher_is_better else max(highs)
        t.spread = max(highs) - min(lows)
    base_arr = np.array([base_means[k] for k in paired], dtype=np.float64)
    cand_arr = np.array([cand_means[k] for k in paired], dtype=np.float64)
    gains = sign * (cand_arr - base_arr)
    imputed_gains = sign * (worst - np.array([base_means[k] for k in imputed], dtype=np.float64))
    all_gains = np.concatenate([gains, imputed_gains])
    t.worst_delta = sign * float(all_gains.mean())
    if not paired:  # the candidate measured none of the baseline's items: a broken candidate
        t.nothing_measured = True
        t.p_value, t.p_pass = 0.0, 1.0
        t.regression_test = t.pass_test = "the candidate measured no item"
        return t

    groups = entry.groups
    binary_single = metric.kind == "binary" and single and groups is None
    if groups is not None:
        keys = [*paired, *imputed]
        measured_units = _group_means(gains, paired, groups)
        units = _group_means(all_gains, keys, groups)
        t.n_groups = len(units)
    else:
        measured_units, units = gains, all_gains
    t.units = len(units)
    t.sd = float(np.std(units, ddof=1)) if len(units) > 1 else math.nan

    if binary_single:
        decreases, increases = int(np.count_nonzero(gains < 0)), int(np.count_nonzero(gains > 0))
        p_worse, p_better = mid_p_mcnemar(decreases, increases)
        t.regression_test = MID_P_MCNEMAR
    else:
        p_worse, p_better, t.regression_test = sign_flip_p(measured_units, seed=seed)
    t.p_value = p_worse

    changed = int(np.count_nonzero(units))
    if changed == 0:
        t.all_zero = True
        q = margin_value / t.spread if t.spread > 0 else (math.inf if margin_value > 0 else 0.0)
        # the chance of no differing item among n if at least a share q of items differ
        t.p_pass = 0.0 if q >= 1 else 1.0 if q <= 0 else (1 - q) ** len(units)
        t.pass_test = CLOPPER_PEARSON
    elif binary_single:
        d = int(np.count_nonzero(all_gains < 0))
        c = int(np.count_nonzero(all_gains > 0))
        t.discordance = (d + c) / len(all_gains)
        t.p_pass, t.pass_test = binary_noninferiority_p(d, c, len(all_gains), margin_value)
    elif changed < SHIFTED_SIGN_FLIP_MIN:
        # few items moved: the shifted differences are far from symmetric (an atom at +margin), so
        # the sign-flip test would be liberal; the empirical Bernstein bound holds for any bounded
        # differences, and its variance term lets few changes among many items pass
        spread = 2 * max(t.spread, float(np.abs(units).max()))
        t.p_pass = empirical_bernstein_p(units + margin_value, spread)
        t.pass_test = EMPIRICAL_BERNSTEIN
    else:
        t.p_pass, t.pass_test = shifted_above_p(units + margin_value, seed=seed)
    t.comparison = _paired_comparison(
        base_arr, cand_arr, t, level, binary_single, p_worse, p_better, sign, len(imputed), estimates
    )
    return t


def _paired_comparison(
    base: npt.NDArray[np.float64],
    cand: npt.NDArray[np.float64],
    t: _Tested,
    level: float,
    binary_single: bool,
    p_worse: float,
    p_better: float,
    sign: float,
    n_imputed: int,
    interval: bool,
) -> PairedComparison:
    """The measured pairs' difference with a (1 - 2 level) interval, for the reports (``interval``
    False: none, nan): Tango's for single-epoch pass/fail data, else the sign-flip interval up to 19
    items and the t interval above."""
    import numpy as np

    diffs = cand - base
    n = len(diffs)
    delta = float(diffs.mean())
    confidence = 1 - 2 * level
    decreases, increases = int(np.count_nonzero(diffs < 0)), int(np.count_nonzero(diffs > 0))
    all_zero = decreases == increases == 0
    if all_zero:
        low = high = sd = 0.0
    elif binary_single:
        sd = math.sqrt(max(0.0, (decreases + increases) / n - delta * delta))
        low, high = math.nan, math.nan
        if interval:
            low, high = _tango_interval(decreases, increases, n, _normal_quantile(0.5 + confidence / 2))
    elif not interval:
        sd = float(np.std(diffs, ddof=1)) if n > 1 else math.nan
        low, high = math.nan, math.nan
    elif n <= SIGN_FLIP_MAX_ITEMS:
        low, high, _, _ = _sign_flip_exact(diffs, confidence)
        sd = float(np.std(diffs, ddof=1)) if n > 1 else math.nan
    else:
        sd = float(np.std(diffs, ddof=1))
        low, high, _, _ = _t_test(delta, sd, n, confidence)
    p_decrease, p_increase = (p_worse, p_better) if sign > 0 else (p_better, p_worse)
    return PairedComparison(
        n_items=n,
        n_excluded=t.n_excluded + n_imputed,
        baseline_mean=float(base.mean()),
        candidate_mean=float(cand.mean()),
        delta=delta,
        low=low,
        high=high,
        confidence=confidence,
        p_decrease=p_decrease,
        p_increase=p_increase,
        method=t.regression_test,
        sd_difference=sd,
        cohens_dz=delta / sd if sd > 0 and math.isfinite(sd) else None,
        discordant=(decreases, increases) if binary_single else None,
        sign=sign_test_counts(decreases, increases, n),
        all_differences_zero=all_zero,
    )


def sign_test_counts(decreases: int, increases: int, n: int) -> SignTestResult:
    """The exact sign test from the counts of lower and higher paired items."""
    exact = mcnemar_exact(decreases, increases)
    return SignTestResult(
        decreases, increases, n - decreases - increases, exact.p_two_sided, exact.p_decrease, exact.p_increase
    )


def _estimate(
    by_item: ValuesByItem, means: Mapping[str, float], confidence: float, resamples: int, seed: int
) -> Estimate | None:
    """A run's mean over items with its interval: the clustered bootstrap, or above
    :data:`BOOTSTRAP_MAX_ITEMS` items (where the two agree) the t interval on item means, for speed."""
    import numpy as np

    if not means:
        return None
    if len(means) <= BOOTSTRAP_MAX_ITEMS:
        return clustered_bootstrap(by_item, confidence, resamples, seed)
    values = np.fromiter(means.values(), dtype=np.float64, count=len(means))
    n, mean = len(values), float(values.mean())
    half = _student_t_quantile(0.5 + confidence / 2, n - 1) * float(values.std(ddof=1)) / math.sqrt(n)
    n_values = sum(len(v) for v in by_item.values())
    return Estimate(mean, mean - half, mean + half, confidence, n, n_values)


def _group_means(
    gains: npt.NDArray[np.float64], keys: Sequence[str], groups: Mapping[str, str]
) -> npt.NDArray[np.float64]:
    import numpy as np

    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for key, g in zip(keys, gains.tolist(), strict=True):
        group = groups[key]
        sums[group] = sums.get(group, 0.0) + g
        counts[group] = counts.get(group, 0) + 1
    return np.array([sums[k] / counts[k] for k in sorted(sums)], dtype=np.float64)


def items_needed(t: _Tested, next_alpha: float) -> int | None:
    """Paired items (groups, when grouped) for the next look to pass a candidate that is truly no
    different with probability 0.85: planned from the margin and an 80% upper bound of the observed
    discordance (pass/fail) or spread of the differences, never from the observed difference. None
    with a margin of 0 (no sample shows a pass) or without a spread to plan from."""
    m = t.margin
    if m <= 0 or t.units == 0:
        return None
    z = _normal_quantile(1 - next_alpha) + _normal_quantile(PLANNING_POWER)
    if t.all_zero:
        q = m / t.spread if t.spread > 0 else 1.0
        if q >= 1:
            return t.units + 1
        needed = math.floor(math.log(next_alpha) / math.log(1 - q)) + 1
    elif t.discordance is not None:
        k = round(t.discordance * t.units)
        q = clopper_pearson_upper(k, t.units, 1 - PLANNING_BOUND)
        needed = math.ceil(z * z * q / (m * m))
    elif math.isfinite(t.sd) and t.sd > 0:
        sd = t.sd * math.sqrt((t.units - 1) / _chi_square_quantile(1 - PLANNING_BOUND, t.units - 1))
        needed = math.ceil((z * sd / m) ** 2 + z * z / 2)
    else:
        return None
    return max(needed, t.units + 1)


def _chi_square_quantile(p: float, df: int) -> float:
    """Wilson-Hilferty's approximation to the chi-square quantile (close enough to plan with)."""
    z = _normal_quantile(p)
    c = 2 / (9 * df)
    return df * max(1 - c + z * math.sqrt(c), 1e-3) ** 3


def _unscored_rule_out_a_pass(t: _Tested) -> bool:
    """Whether the items the candidate left unscored, at their worst, already lose more than the
    margin: then no number of items can make it pass; scoring those items can."""
    if not t.n_imputed or not math.isfinite(t.worst_delta):
        return False
    sign = 1.0 if t.entry.metric.higher_is_better else -1.0
    return sign * t.worst_delta <= -t.margin


def _result(t: _Tested, p_adjusted: float, alpha: float, level: float, next_alpha: float) -> MetricResult:
    entry = t.entry
    if t.nothing_measured:
        verdict = GateVerdict.REGRESSION
    elif t.p_pass < level:
        verdict = GateVerdict.PASS
    elif p_adjusted < level:
        verdict = GateVerdict.REGRESSION
    else:
        verdict = GateVerdict.INCONCLUSIVE
    needed = None
    if verdict is GateVerdict.INCONCLUSIVE and not _unscored_rule_out_a_pass(t):
        needed = items_needed(t, next_alpha)
    result = MetricResult(
        metric=entry.metric,
        verdict=verdict,
        baseline=t.base_est,
        candidate=t.cand_est,
        comparison=t.comparison,
        margin=t.margin,
        alpha=alpha,
        look_alpha=level,
        n_excluded=t.n_excluded,
        unmeasured_baseline=entry.baseline.unmeasured,
        unmeasured_candidate=entry.candidate.unmeasured,
        n_imputed=t.n_imputed,
        worst_delta=t.worst_delta,
        p_value=t.p_value,
        p_adjusted=p_adjusted,
        p_pass=t.p_pass,
        regression_test=t.regression_test,
        pass_test=t.pass_test,
        n_groups=t.n_groups,
        items_needed=needed,
        explanation="",
    )
    from pilothouse.evals.gate._reports import explain

    return _with_explanation(result, explain(result))


def _with_explanation(result: MetricResult, text: str) -> MetricResult:
    from dataclasses import replace

    return replace(result, explanation=text)
