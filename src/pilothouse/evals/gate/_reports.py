"""The gate's reports: the explanation of each metric's verdict, and the Markdown, JUnit XML and JSON
documents of a whole decision (:class:`~pilothouse.evals.gate.GateDecision`)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from pilothouse.evals.gate._decision import GateDecision, GateVerdict, MetricResult, MetricSpec
from pilothouse.evals.stats import Estimate

if TYPE_CHECKING:
    from pilothouse.domain.calibrations import Calibration

# The judge metrics of a comparison: metric name -> its judge's calibration (None: uncalibrated,
# gated anyway with --allow-uncalibrated). Metrics not graded by a judge are absent.
JudgeCalibrations: TypeAlias = "Mapping[str, Calibration | None]"


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


def explain(r: MetricResult) -> str:
    """The verdict of one metric in words: the evidence, the look's alpha, what the candidate could not
    score, and (inconclusive) what the next look needs."""
    metric, c = r.metric, r.comparison
    worse = "lower" if metric.higher_is_better else "higher"
    margin = _diff(metric, r.margin, False)
    unscored = ""
    if r.n_imputed:
        unscored = (
            f" The candidate did not score {r.n_imputed:,} item{'s' if r.n_imputed != 1 else ''} the "
            f"baseline measured (errors, or items it was not run on); the pass test counts them at the "
            f"metric's worst value (delta {_diff(metric, r.worst_delta)} in that worst case)."
        )
    if c is None and r.n_imputed:
        return (
            f"Regression: the candidate measured none of the {r.n_imputed:,} items the baseline measured "
            "(errors, timeouts or unreadable replies on every one)."
        )
    if c is None:
        return "No item was measured in both runs, so there is nothing to compare."
    at = f"alpha {r.look_alpha:.4g}"
    ci = f"{100 * c.confidence:.4g}% CI {_interval(metric, c.low, c.high)}"
    p_worse = f"one-sided p {_p_is(r.p_value)}" + (
        f", Holm-adjusted {_p(r.p_adjusted)}" if r.p_adjusted != r.p_value else ""
    )
    units = f"{r.n_groups} groups" if r.n_groups is not None else f"{c.n_items} paired items"
    if r.verdict is GateVerdict.PASS:
        if c.all_differences_zero and not r.n_imputed:
            return (
                f"No regression: identical results on all {units}, enough to rule out (at {at}) that "
                f"the candidate is {margin} {worse} or worse."
            )
        return (
            f"No regression: delta {_diff(metric, c.delta)} ({ci}); at {at} the candidate is no more "
            f"than {margin} {worse} than the baseline (p {_p_is(r.p_pass)}).{unscored}"
        )
    if r.verdict is GateVerdict.REGRESSION:
        return (
            f"Regression: the candidate scores {worse} by {_diff(metric, abs(c.delta), False)} ({ci}, "
            f"{p_worse}, below {at}): more than chance explains over {units}.{unscored}"
        )
    noun = "groups" if r.n_groups is not None else "paired items"
    worst_gain = r.worst_delta if metric.higher_is_better else -r.worst_delta
    if r.n_imputed and math.isfinite(worst_gain) and worst_gain <= -r.margin:
        decide = (
            f"more items cannot make it pass while {r.n_imputed:,} baseline items stay unscored: "
            "fix the candidate's errors (or run it on the baseline's items) and gate again"
        )
    elif r.items_needed is not None:
        decide = f"about {r.items_needed:,} {noun} would likely decide at the next look"
    elif r.margin <= 0:
        decide = "with a margin of 0 the gate can show a regression but never a pass"
    else:
        decide = f"too few {noun} to plan from: add items and gate again"
    if c.all_differences_zero and not r.n_imputed:
        return (
            f"Inconclusive: identical results on all {units}, too few to rule out (at {at}) a loss of "
            f"{margin}; {decide}."
        )
    return (
        f"Inconclusive: delta {_diff(metric, c.delta)} ({ci}) neither rules out a loss of {margin} "
        f"(p {_p_is(r.p_pass)}) nor shows a significant one ({p_worse}, {at}); {decide}.{unscored}"
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
    decision: GateDecision,
    baseline_run: str,
    candidate_run: str,
    judges: JudgeCalibrations | None = None,
    not_gated: Sequence[str] = (),
) -> str:
    """A Markdown report: overall verdict and look, one table row per metric (with its judge's
    calibration when a judge grades it), then each explanation."""
    results, overall = decision.results, decision.verdict
    judges = judges or {}
    extra_head, extra_rule = (" Judge calibration |", "---|") if judges else ("", "")
    lines = [
        f"# Quality gate: {overall.value.upper()}",
        "",
        f"Baseline `{baseline_run}`, candidate `{candidate_run}` (exit code {overall.exit_code}).",
        "",
        look_text(decision),
        "",
        "| Metric | Verdict | Baseline | Candidate | Delta | Delta CI | Worst-case delta | p (worse) "
        "| p (worse, Holm) | p (margin) | Margin | Paired | Excluded | Unmeasured (base / cand) | Test |"
        + extra_head,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + extra_rule,
    ]
    for r in results:
        m = r.metric
        conf = f"{100 * (1 - 2 * r.look_alpha):.4g}%"
        cells = [
            _markdown_text(m.name) + ("" if m.higher_is_better else " (lower is better)"),
            f"**{r.verdict.value}**",
            _estimate_text(m, r.baseline),
            _estimate_text(m, r.candidate),
            _diff(m, r.delta),
            f"{conf}: {_interval(m, r.delta_low, r.delta_high)}",
            _diff(m, r.worst_delta),
            _p(r.p_value),
            _p(r.p_adjusted),
            _p(r.p_pass),
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
    if not_gated:
        lines += ["", "Not gated (only the candidate has them): " + ", ".join(map(_markdown_text, not_gated))]
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
    decision: GateDecision,
    baseline_run: str,
    candidate_run: str,
    judges: JudgeCalibrations | None = None,
    not_gated: Sequence[str] = (),
) -> str:
    """JUnit XML: one testcase per metric; a regression fails, an inconclusive result is skipped."""
    results = decision.results
    failures = sum(r.verdict is GateVerdict.REGRESSION for r in results)
    skipped = sum(r.verdict is GateVerdict.INCONCLUSIVE for r in results)
    counts = {"tests": str(len(results)), "failures": str(failures), "errors": "0", "skipped": str(skipped)}
    suites = ET.Element("testsuites", {"name": "pilothouse gate", **counts})
    suite = ET.SubElement(suites, "testsuite", {"name": f"gate {baseline_run} -> {candidate_run}", **counts})
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("baseline_run", baseline_run),
        ("candidate_run", candidate_run),
        ("look", str(decision.look)),
        ("look_alpha", f"{decision.look_alpha:.6g}"),
    ):
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
    decision: GateDecision,
    baseline_run: str,
    candidate_run: str,
    judges: JudgeCalibrations | None = None,
    not_gated: Sequence[str] = (),
) -> str:
    """The whole finding as JSON (:func:`gate_document`)."""
    doc = gate_document(decision, baseline_run, candidate_run, judges, not_gated)
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def gate_document(
    decision: GateDecision,
    baseline_run: str,
    candidate_run: str,
    judges: JudgeCalibrations | None = None,
    not_gated: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole finding as JSON-ready data (non-finite numbers as None). A judge metric has
    ``judge``: ``{"calibrated": true, "calibration": {...}}`` or ``{"calibrated": false}``."""
    overall = decision.verdict
    return {
        "verdict": overall.value,
        "exit_code": overall.exit_code,
        "baseline_run": baseline_run,
        "candidate_run": candidate_run,
        "alpha": decision.alpha,
        "look": decision.look,
        "look_alpha": decision.look_alpha,
        "metrics": [_result_dict(r, judges or {}) for r in decision.results],
        "not_gated": list(not_gated),
    }


def look_text(decision: GateDecision) -> str:
    """Which look of the baseline/candidate pair this is and the alpha it spends."""
    return (
        f"Look {decision.look} of this baseline and candidate configuration: it spends alpha "
        f"{decision.look_alpha:.4g} of {decision.alpha:g} (0.9 alpha at the first look, then 0.1 alpha "
        "halved at each further look)."
    )


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
        "p_adjusted": _finite(r.p_adjusted),
        "p_pass": _finite(r.p_pass),
        "look_alpha": r.look_alpha,
        "regression_test": r.regression_test,
        "pass_test": r.pass_test,
        "n_groups": r.n_groups,
        "n_imputed": r.n_imputed,
        "worst_delta": _finite(r.worst_delta),
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
