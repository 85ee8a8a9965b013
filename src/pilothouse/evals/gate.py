"""The quality gate: a non-inferiority decision per metric, and the reports that explain it.

Pure functions over per-item values (see :mod:`pilothouse.evals.stats`); loading runs and checking
their judges is the evaluations service's (:class:`pilothouse.evals.Evaluations`), writing files and
exit codes of usage errors (2) the CLI's. The method is explained for users in docs/gate.md.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pilothouse.evals.stats import (
    EXACT_MCNEMAR,
    Estimate,
    PairedComparison,
    ValuesByItem,
    _normal_quantile,
    clustered_bootstrap,
    item_means,
    paired_difference,
)

if TYPE_CHECKING:
    from pilothouse.domain.calibrations import Calibration

MetricKind = Literal["binary", "continuous"]
# The judge metrics of a comparison: metric name -> its judge's calibration (None: uncalibrated,
# gated anyway with --allow-uncalibrated). Metrics not graded by a judge are absent.
JudgeCalibrations: TypeAlias = "Mapping[str, Calibration | None]"

DEFAULT_ALPHA = 0.05
DEFAULT_BINARY_MARGIN = 0.02  # two percentage points of pass rate
DEFAULT_RELATIVE_MARGIN = 0.02  # continuous metrics: 2% of the baseline's mean
DECISION_POWER = 0.8  # items_needed: the sample that decides with this probability at the observed effect


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
    """One run's values of one metric: ``{item_id: [value per epoch]}`` and the unmeasured count."""

    by_item: ValuesByItem
    unmeasured: int = 0  # errors, timeouts, unparseable judge replies: reported, never scored


@dataclass(frozen=True, slots=True)
class MetricResult:
    """The gate's finding for one metric, with the numbers behind it."""

    metric: MetricSpec
    verdict: GateVerdict
    baseline: Estimate | None  # over every item measured in the baseline run
    candidate: Estimate | None
    comparison: PairedComparison | None  # None when no item is measured in both runs
    margin: float
    alpha: float
    n_excluded: int  # items measured in only one run, left out of the comparison
    unmeasured_baseline: int
    unmeasured_candidate: int
    items_needed: int | None  # inconclusive only: paired items that would likely decide
    explanation: str

    @property
    def delta(self) -> float:
        """Candidate minus baseline over the paired items, on the metric's own scale."""
        return self.comparison.delta if self.comparison else math.nan

    @property
    def delta_low(self) -> float:
        """Lower end of the delta's (1 - 2 alpha) two-sided interval (the one-sided 1 - alpha bound)."""
        return self.comparison.low if self.comparison else math.nan

    @property
    def delta_high(self) -> float:
        """Upper end of the delta's (1 - 2 alpha) two-sided interval."""
        return self.comparison.high if self.comparison else math.nan

    @property
    def p_value(self) -> float:
        """One-sided p-value of "the candidate is worse" (oriented by ``higher_is_better``)."""
        if self.comparison is None:
            return math.nan
        c = self.comparison
        return c.p_decrease if self.metric.higher_is_better else c.p_increase

    @property
    def test(self) -> str:
        """The test behind the verdict, in words."""
        if self.comparison is None:
            return "none (no paired items)"
        if self.comparison.method == EXACT_MCNEMAR:
            return "exact McNemar (Tango score interval)"
        return self.comparison.method

    @property
    def n_paired(self) -> int:
        """Items measured in both runs."""
        return self.comparison.n_items if self.comparison else 0


def default_margin(metric: MetricSpec, baseline_mean: float) -> float:
    """The margin used when none is given: 2 points for pass rates, 2% of the baseline mean otherwise."""
    if metric.kind == "binary":
        return DEFAULT_BINARY_MARGIN
    return DEFAULT_RELATIVE_MARGIN * abs(baseline_mean) if math.isfinite(baseline_mean) else 0.0


def non_inferiority_verdict(
    comparison: PairedComparison, *, margin: float, alpha: float, higher_is_better: bool = True
) -> GateVerdict:
    """Pass, regression or inconclusive from a comparison made at confidence ``1 - 2 * alpha``.

    Pass: the one-sided (1 - alpha) bound rules out a loss larger than ``margin``, or every paired
    difference is exactly zero (no difference at all is not a regression, whatever the margin).
    Regression: not a pass, and the one-sided test of "candidate worse" rejects at ``alpha``.
    Otherwise inconclusive.
    """
    if not math.isclose(comparison.confidence, 1 - 2 * alpha, abs_tol=1e-9):
        raise ValueError("the comparison's confidence must be 1 - 2 * alpha")
    if comparison.all_differences_zero:
        return GateVerdict.PASS
    if higher_is_better:
        passes, p_worse = comparison.low > -margin, comparison.p_decrease
    else:
        passes, p_worse = comparison.high < margin, comparison.p_increase
    if passes:
        return GateVerdict.PASS
    if p_worse < alpha:  # False for nan: no evidence either way
        return GateVerdict.REGRESSION
    return GateVerdict.INCONCLUSIVE


def items_needed(
    comparison: PairedComparison, *, margin: float, alpha: float, higher_is_better: bool = True
) -> int | None:
    """Paired items that would decide with probability 0.8 if the observed effect and spread hold.

    Normal-approximation sample size for whichever decision is nearer: a pass (bound above -margin)
    or a regression (bound below 0). None when neither can be reached (the observed difference sits
    exactly at zero with a zero margin) or the spread cannot be estimated.
    """
    sd = comparison.sd_difference
    if not math.isfinite(sd):
        return None
    gain = comparison.delta if higher_is_better else -comparison.delta
    if sd == 0:
        # Every pair moved by the same amount: no spread to extrapolate, but if they all got worse an
        # exact sign test decides as soon as 0.5 ** n < alpha.
        if gain < 0:
            return max(math.ceil(math.log(alpha) / math.log(0.5)), comparison.n_items + 1)
        return None
    z = _normal_quantile(1 - alpha) + _normal_quantile(DECISION_POWER)
    gaps = [g for g in (gain + margin, -gain) if g > 0]
    if not gaps:
        return None
    needed = math.ceil((z * sd / max(gaps)) ** 2)
    return max(needed, comparison.n_items + 1)


def compare_metric(
    metric: MetricSpec,
    baseline: MetricValues,
    candidate: MetricValues,
    *,
    margin: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    resamples: int = 2000,
    seed: int = 0,
) -> MetricResult:
    """Run the non-inferiority gate on one metric; raises ValueError on invalid input.

    ``margin`` is on the metric's scale (0.02 is two points of pass rate); None takes
    :func:`default_margin`. The test follows the data (see :func:`paired_difference`): exact McNemar
    for pass/fail metrics with one epoch per item; otherwise, on per-item means, the exact sign-flip
    test below 20 paired items and a paired t test from 20. ``resamples`` only affects the per-run
    intervals, never the verdict.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be between 0 and 0.5, not {alpha}")
    if margin is not None and not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a non-negative number, not {margin}")
    for run in (baseline, candidate):
        _check_values(metric, run.by_item)
    estimates = [
        clustered_bootstrap(run.by_item, 1 - alpha, resamples, seed) if item_means(run.by_item) else None
        for run in (baseline, candidate)
    ]
    base_est, cand_est = estimates
    if margin is None:
        margin = default_margin(metric, base_est.mean if base_est else math.nan)
    comparison: PairedComparison | None = None
    verdict, needed = GateVerdict.INCONCLUSIVE, None
    n_excluded = len(baseline.by_item.keys() | candidate.by_item.keys())
    explanation = "No item was measured in both runs, so there is nothing to compare."
    if item_means(baseline.by_item).keys() & item_means(candidate.by_item).keys():
        comparison = paired_difference(
            baseline.by_item, candidate.by_item, confidence=1 - 2 * alpha, resamples=resamples, seed=seed
        )
        hib = metric.higher_is_better
        verdict = non_inferiority_verdict(comparison, margin=margin, alpha=alpha, higher_is_better=hib)
        if verdict is GateVerdict.INCONCLUSIVE:
            needed = items_needed(comparison, margin=margin, alpha=alpha, higher_is_better=hib)
        n_excluded = comparison.n_excluded
        explanation = _explain(metric, verdict, comparison, margin, alpha, needed)
    return MetricResult(
        metric=metric,
        verdict=verdict,
        baseline=base_est,
        candidate=cand_est,
        comparison=comparison,
        margin=margin,
        alpha=alpha,
        n_excluded=n_excluded,
        unmeasured_baseline=baseline.unmeasured,
        unmeasured_candidate=candidate.unmeasured,
        items_needed=needed,
        explanation=explanation,
    )


def overall_verdict(results: Sequence[MetricResult]) -> GateVerdict:
    """Any regression -> regression; else any inconclusive -> inconclusive; else pass."""
    if not results:
        raise ValueError("no metric to gate on")
    verdicts = {r.verdict for r in results}
    for verdict in (GateVerdict.REGRESSION, GateVerdict.INCONCLUSIVE):
        if verdict in verdicts:
            return verdict
    return GateVerdict.PASS


def _check_values(metric: MetricSpec, by_item: ValuesByItem) -> None:
    for item, values in by_item.items():
        for v in values:
            if not math.isfinite(v):
                raise ValueError(f"{metric.name}: item {item!r} has a non-finite value {v}")
            if metric.kind == "binary" and v not in (0.0, 1.0):
                raise ValueError(f"{metric.name} is binary but item {item!r} has the value {v}")


# --- words and numbers ----------------------------------------------------------------------------------


def _value(metric: MetricSpec, x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{100 * x:.1f}%" if metric.kind == "binary" else f"{x:.4g}"


def _diff(metric: MetricSpec, x: float, signed: bool = True) -> str:
    if not math.isfinite(x):
        return "n/a"
    if metric.kind == "binary":
        return f"{100 * x:+.1f} pts" if signed else f"{100 * x:.1f} pts"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def _interval(metric: MetricSpec, low: float, high: float) -> str:
    return f"{_diff(metric, low)} to {_diff(metric, high)}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _p_is(p: float) -> str:
    text = _p(p)
    return text if text.startswith("<") else f"= {text}"


def _explain(
    metric: MetricSpec,
    verdict: GateVerdict,
    c: PairedComparison,
    margin: float,
    alpha: float,
    needed: int | None,
) -> str:
    worse = "lower" if metric.higher_is_better else "higher"
    level = f"{100 * (1 - alpha):g}%"
    ci = f"{100 * c.confidence:g}% CI {_interval(metric, c.low, c.high)}"
    if verdict is GateVerdict.PASS and c.all_differences_zero:
        return f"Identical results on all {c.n_items} paired items: no difference, so no regression."
    if verdict is GateVerdict.PASS:
        return (
            f"No regression: delta {_diff(metric, c.delta)} ({ci}); with {level} confidence the candidate "
            f"is no more than {_diff(metric, margin, False)} {worse} than the baseline."
        )
    p_worse = c.p_decrease if metric.higher_is_better else c.p_increase
    if verdict is GateVerdict.REGRESSION:
        return (
            f"Regression: the candidate scores {worse} by {_diff(metric, abs(c.delta), False)} ({ci}, "
            f"one-sided p {_p_is(p_worse)}, below alpha {alpha:g}): more than chance explains "
            f"over {c.n_items} items."
        )
    decide = (
        f"about {needed:,} paired items would likely decide"
        if needed is not None
        else "more items will not decide at this difference; set a margin"
    )
    return (
        f"Inconclusive: delta {_diff(metric, c.delta)} ({ci}) neither rules out a loss larger than "
        f"{_diff(metric, margin, False)} nor shows a significant one (p {_p_is(p_worse)}); {decide}."
    )


# --- reports --------------------------------------------------------------------------------------------


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def judge_calibration_text(calibration: Calibration | None) -> str:
    """A judge's calibration in one line: kappa [CI], TPR, TNR, flip rate, version and n."""
    if calibration is None:
        return "uncalibrated"
    m = calibration.metrics
    kappa = "n/a" if m.kappa is None else f"{m.kappa:.2f}"
    if m.kappa_low is not None and m.kappa_high is not None:
        kappa += f" [{m.kappa_low:.2f}, {m.kappa_high:.2f}]"
    flips = "" if m.flip_rate is None else f", flip rate {_rate(m.flip_rate)}"
    return (
        f"kappa {kappa}, TPR {_rate(m.tpr)}, TNR {_rate(m.tnr)}{flips} "
        f"(calibration v{calibration.version}, n {m.n})"
    )


def render_markdown(
    results: Sequence[MetricResult],
    baseline_run: str,
    candidate_run: str,
    judges: JudgeCalibrations | None = None,
) -> str:
    """A Markdown report: overall verdict, one table row per metric (with its judge's calibration when
    a judge grades it), then each explanation."""
    overall = overall_verdict(results)
    judges = judges or {}
    extra_head, extra_rule = (" Judge calibration |", "---|") if judges else ("", "")
    lines = [
        f"# Quality gate: {overall.value.upper()}",
        "",
        f"Baseline `{baseline_run}`, candidate `{candidate_run}` (exit code {overall.exit_code}).",
        "",
        "| Metric | Verdict | Baseline | Candidate | Delta | Delta CI | p (worse) | Margin | Paired "
        "| Excluded | Unmeasured (base / cand) | Test |" + extra_head,
        "|---|---|---|---|---|---|---|---|---|---|---|---|" + extra_rule,
    ]
    for r in results:
        m = r.metric
        conf = f"{100 * (1 - 2 * r.alpha):g}%"
        cells = [
            _markdown_text(m.name) + ("" if m.higher_is_better else " (lower is better)"),
            f"**{r.verdict.value}**",
            _estimate_text(m, r.baseline),
            _estimate_text(m, r.candidate),
            _diff(m, r.delta),
            f"{conf}: {_interval(m, r.delta_low, r.delta_high)}",
            _p(r.p_value),
            _diff(m, r.margin, False),
            str(r.n_paired),
            str(r.n_excluded),
            f"{r.unmeasured_baseline} / {r.unmeasured_candidate}",
            r.test,
        ]
        if judges:
            name = r.metric.name
            cells.append(_markdown_text(judge_calibration_text(judges[name])) if name in judges else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Findings", ""]
    for r in results:
        line = f"- **{_markdown_text(r.metric.name)}**: {r.explanation}"
        if r.metric.name in judges and judges[r.metric.name] is None:
            line += " The judge that grades it is not calibrated against human labels (--allow-uncalibrated)."
        lines.append(line)
    return "\n".join(lines) + "\n"


def _markdown_text(text: str) -> str:
    """Plain text that stays plain in a table cell: no column breaks, no HTML tags."""
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("*", "\\*"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(char, escaped)
    return text


def _estimate_text(metric: MetricSpec, e: Estimate | None) -> str:
    if e is None:
        return "n/a"
    return f"{_value(metric, e.mean)} [{_value(metric, e.low)}, {_value(metric, e.high)}]"


def render_junit(
    results: Sequence[MetricResult],
    baseline_run: str,
    candidate_run: str,
    judges: JudgeCalibrations | None = None,
) -> str:
    """JUnit XML: one testcase per metric; a regression fails, an inconclusive result is skipped."""
    failures = sum(r.verdict is GateVerdict.REGRESSION for r in results)
    skipped = sum(r.verdict is GateVerdict.INCONCLUSIVE for r in results)
    counts = {"tests": str(len(results)), "failures": str(failures), "errors": "0", "skipped": str(skipped)}
    suites = ET.Element("testsuites", {"name": "pilothouse gate", **counts})
    suite = ET.SubElement(suites, "testsuite", {"name": f"gate {baseline_run} -> {candidate_run}", **counts})
    props = ET.SubElement(suite, "properties")
    for name, value in (("baseline_run", baseline_run), ("candidate_run", candidate_run)):
        ET.SubElement(props, "property", {"name": name, "value": value})
    for r in results:
        case = ET.SubElement(suite, "testcase", {"classname": "pilothouse.gate", "name": r.metric.name})
        if r.verdict is GateVerdict.REGRESSION:
            ET.SubElement(
                case, "failure", {"message": r.explanation, "type": "regression"}
            ).text = r.explanation
        elif r.verdict is GateVerdict.INCONCLUSIVE:
            ET.SubElement(case, "skipped", {"message": r.explanation})
        ET.SubElement(case, "system-out").text = json.dumps(_result_dict(r, judges or {}), indent=2)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def render_json(
    results: Sequence[MetricResult],
    baseline_run: str,
    candidate_run: str,
    judges: JudgeCalibrations | None = None,
) -> str:
    """The whole finding as JSON (:func:`gate_document`)."""
    doc = gate_document(results, baseline_run, candidate_run, judges)
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def gate_document(
    results: Sequence[MetricResult],
    baseline_run: str,
    candidate_run: str,
    judges: JudgeCalibrations | None = None,
) -> dict[str, Any]:
    """The whole finding as JSON-ready data (non-finite numbers as None). A judge metric has
    ``judge``: ``{"calibrated": true, "calibration": {...}}`` or ``{"calibrated": false}``."""
    overall = overall_verdict(results)
    return {
        "verdict": overall.value,
        "exit_code": overall.exit_code,
        "baseline_run": baseline_run,
        "candidate_run": candidate_run,
        "metrics": [_result_dict(r, judges or {}) for r in results],
    }


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _estimate_dict(e: Estimate | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "mean": _finite(e.mean),
        "low": _finite(e.low),
        "high": _finite(e.high),
        "confidence": e.confidence,
        "n_items": e.n_items,
        "n_values": e.n_values,
    }


def _result_dict(r: MetricResult, judges: JudgeCalibrations) -> dict[str, Any]:
    c = r.comparison
    effect: Mapping[str, Any] = {}
    if c is not None:
        effect = {
            "cohens_dz": _finite(c.cohens_dz),
            "discordant_decreases": c.discordant[0] if c.discordant else None,
            "discordant_increases": c.discordant[1] if c.discordant else None,
            "items_decreased": c.sign.n_decrease,
            "items_increased": c.sign.n_increase,
            "sign_test_p_two_sided": _finite(c.sign.p_two_sided),
        }
    return {
        "metric": r.metric.name,
        "kind": r.metric.kind,
        "higher_is_better": r.metric.higher_is_better,
        "verdict": r.verdict.value,
        "baseline": _estimate_dict(r.baseline),
        "candidate": _estimate_dict(r.candidate),
        "delta": _finite(r.delta),
        "delta_low": _finite(r.delta_low),
        "delta_high": _finite(r.delta_high),
        "delta_confidence": c.confidence if c else None,
        "p_value": _finite(r.p_value),
        "test": r.test,
        "margin": r.margin,
        "alpha": r.alpha,
        "n_paired": r.n_paired,
        "n_excluded": r.n_excluded,
        "unmeasured_baseline": r.unmeasured_baseline,
        "unmeasured_candidate": r.unmeasured_candidate,
        "items_needed": r.items_needed,
        "effect": dict(effect),
        "explanation": r.explanation,
    } | _judge_dict(r.metric.name, judges)


def _judge_dict(name: str, judges: JudgeCalibrations) -> dict[str, Any]:
    if name not in judges:
        return {}
    calibration = judges[name]
    if calibration is None:
        return {"judge": {"calibrated": False}}
    summary = {k: _finite(v) if isinstance(v, float) else v for k, v in calibration.summary().items()}
    return {"judge": {"calibrated": True, "calibration": summary}}
