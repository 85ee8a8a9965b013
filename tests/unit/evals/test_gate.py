"""The non-inferiority gate: verdicts, the zero-difference rule, sample sizes and the reports."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from pilothouse.evals.gate import (
    DEFAULT_BINARY_MARGIN,
    GateVerdict,
    MetricResult,
    MetricSpec,
    MetricValues,
    compare_metric,
    default_margin,
    items_needed,
    non_inferiority_verdict,
    overall_verdict,
    render_json,
    render_junit,
    render_markdown,
)
from pilothouse.evals.stats import _normal_quantile, paired_difference

ACCURACY = MetricSpec("accuracy", "binary")
JUDGE = MetricSpec("judge_score", "continuous")
LATENCY = MetricSpec("latency_ms", "continuous", higher_is_better=False)


def table(
    decreases: int, increases: int, both_pass: int, both_fail: int
) -> tuple[MetricValues, MetricValues]:
    """Single-epoch pass/fail runs with the given paired 2x2 table."""
    pairs = (
        [(1.0, 0.0)] * decreases
        + [(0.0, 1.0)] * increases
        + [(1.0, 1.0)] * both_pass
        + [(0.0, 0.0)] * both_fail
    )
    base = {f"q{i}": [b] for i, (b, _) in enumerate(pairs)}
    cand = {f"q{i}": [c] for i, (_, c) in enumerate(pairs)}
    return MetricValues(base), MetricValues(cand)


def continuous(values: np.ndarray, unmeasured: int = 0) -> MetricValues:
    return MetricValues({f"q{i}": [float(v)] for i, v in enumerate(values)}, unmeasured)


def test_exit_codes() -> None:
    assert [v.exit_code for v in GateVerdict] == [0, 1, 3]
    assert GateVerdict("regression") is GateVerdict.REGRESSION and str(GateVerdict.PASS) == "pass"


def test_a_run_compared_with_itself_passes_even_with_zero_margin() -> None:
    base, _ = table(decreases=0, increases=0, both_pass=3, both_fail=2)
    for margin in (0.0, None):
        result = compare_metric(ACCURACY, base, base, margin=margin)
        assert result.verdict is GateVerdict.PASS
        assert "Identical results on all 5 paired items" in result.explanation
        assert result.items_needed is None


def test_zero_margin_needs_evidence_of_no_loss_when_anything_differs() -> None:
    base, cand = table(decreases=1, increases=1, both_pass=50, both_fail=48)
    result = compare_metric(ACCURACY, base, cand, margin=0.0)
    assert result.verdict is GateVerdict.INCONCLUSIVE
    assert result.items_needed is None  # delta exactly 0 at margin 0: no sample size decides
    assert "set a margin" in result.explanation


def test_clearly_worse_candidate_is_a_regression() -> None:
    base, cand = table(decreases=30, increases=5, both_pass=200, both_fail=65)
    result = compare_metric(ACCURACY, base, cand)
    assert result.verdict is GateVerdict.REGRESSION
    assert result.test == "exact McNemar (Tango score interval)"
    assert result.p_value == pytest.approx(paired_difference(base.by_item, cand.by_item).p_decrease)
    assert result.p_value < 1e-4 and result.delta_high < 0
    assert result.delta == pytest.approx(-25 / 300)
    assert result.explanation.startswith("Regression: the candidate scores lower by 8.3 pts")


def test_equal_candidate_with_enough_items_passes_at_the_default_margin() -> None:
    # 3,000 items, 5% discordant in each direction: the 95% lower bound is about -1 point, above -2
    base, cand = table(decreases=75, increases=75, both_pass=2000, both_fail=850)
    result = compare_metric(ACCURACY, base, cand)
    assert result.margin == DEFAULT_BINARY_MARGIN
    assert result.verdict is GateVerdict.PASS
    assert -0.02 < result.delta_low < 0 < result.delta_high


def test_a_small_loss_inside_the_margin_passes_even_when_significant() -> None:
    base, cand = table(decreases=260, increases=180, both_pass=7000, both_fail=2560)
    result = compare_metric(ACCURACY, base, cand, margin=0.02)
    assert result.p_value < 0.05 and result.delta_high < 0  # significantly worse, by under a point
    assert result.verdict is GateVerdict.PASS


def test_inconclusive_says_how_many_items_would_decide() -> None:
    base, cand = table(decreases=6, increases=4, both_pass=60, both_fail=30)
    result = compare_metric(ACCURACY, base, cand)
    assert result.verdict is GateVerdict.INCONCLUSIVE
    # delta -2 pts at margin 2 pts: only a regression can be shown; sd^2 = 10/100 - 0.02^2
    z = _normal_quantile(0.95) + _normal_quantile(0.8)
    expected = math.ceil((z * math.sqrt(0.1 - 0.0004) / 0.02) ** 2)
    assert result.items_needed == expected == 1540
    assert "about 1,540 paired items would likely decide" in result.explanation


def test_items_needed_picks_the_nearer_decision() -> None:
    base, cand = table(decreases=5, increases=6, both_pass=60, both_fail=29)
    c = paired_difference(base.by_item, cand.by_item, confidence=0.9)
    needed = items_needed(c, margin=0.02, alpha=0.05)
    z = _normal_quantile(0.95) + _normal_quantile(0.8)
    assert needed == math.ceil((z * c.sd_difference / (0.01 + 0.02)) ** 2)  # a pass, 3 points away


def test_lower_is_better_metrics_are_oriented() -> None:
    rng = np.random.default_rng(1)
    base = rng.lognormal(6.5, 0.4, 400)
    slower = compare_metric(LATENCY, continuous(base), continuous(base * 1.15 + rng.normal(0, 5, 400)))
    assert slower.verdict is GateVerdict.REGRESSION and slower.delta > 0
    assert slower.explanation.startswith("Regression: the candidate scores higher")
    faster = compare_metric(LATENCY, continuous(base), continuous(base * 0.9 + rng.normal(0, 5, 400)))
    assert faster.verdict is GateVerdict.PASS and faster.delta < 0
    assert slower.margin == pytest.approx(0.02 * float(np.mean(base)))  # default: 2% of the baseline


def test_continuous_metrics_use_the_paired_t_test() -> None:
    rng = np.random.default_rng(2)
    quality = rng.normal(3.5, 1, 200)
    base = continuous(quality + rng.normal(0, 0.3, 200), unmeasured=4)
    cand = continuous(quality - 0.5 + rng.normal(0, 0.3, 200), unmeasured=1)
    result = compare_metric(JUDGE, base, cand)
    assert result.test == "paired t on item means"
    assert result.verdict is GateVerdict.REGRESSION
    assert (result.unmeasured_baseline, result.unmeasured_candidate) == (4, 1)
    assert result.comparison is not None and result.comparison.cohens_dz is not None
    assert result.comparison.cohens_dz < -1


def test_no_paired_items_is_inconclusive() -> None:
    result = compare_metric(ACCURACY, MetricValues({"a": [1.0]}), MetricValues({"b": [1.0], "c": []}, 2))
    assert result.verdict is GateVerdict.INCONCLUSIVE
    assert result.n_paired == 0 and result.n_excluded == 3 and math.isnan(result.p_value)
    assert result.candidate is not None and result.candidate.n_items == 1


def test_invalid_input_is_refused() -> None:
    base, cand = table(decreases=1, increases=1, both_pass=5, both_fail=5)
    with pytest.raises(ValueError, match="binary"):
        compare_metric(ACCURACY, MetricValues({"a": [0.5]}), cand)
    with pytest.raises(ValueError, match="non-finite"):
        compare_metric(JUDGE, MetricValues({"a": [math.nan]}), cand)
    with pytest.raises(ValueError, match="margin"):
        compare_metric(ACCURACY, base, cand, margin=-0.01)
    with pytest.raises(ValueError, match="alpha"):
        compare_metric(ACCURACY, base, cand, alpha=0.5)
    c = paired_difference(base.by_item, cand.by_item, confidence=0.95)
    with pytest.raises(ValueError, match="confidence"):
        non_inferiority_verdict(c, margin=0.0, alpha=0.05)  # needs the 90% interval at alpha 0.05


def test_default_margin() -> None:
    assert default_margin(ACCURACY, 0.7) == 0.02
    assert default_margin(JUDGE, -4.0) == pytest.approx(0.08)
    assert default_margin(JUDGE, math.nan) == 0.0


def test_overall_verdict() -> None:
    base, same = table(decreases=0, increases=0, both_pass=5, both_fail=5)
    passed = compare_metric(ACCURACY, base, same)
    unsure = compare_metric(ACCURACY, *table(decreases=2, increases=1, both_pass=5, both_fail=2))
    failed = compare_metric(ACCURACY, *table(decreases=30, increases=0, both_pass=5, both_fail=5))
    assert [r.verdict for r in (passed, unsure, failed)] == ["pass", "inconclusive", "regression"]
    assert overall_verdict([passed, passed]) is GateVerdict.PASS
    assert overall_verdict([passed, unsure]) is GateVerdict.INCONCLUSIVE
    assert overall_verdict([unsure, failed, passed]) is GateVerdict.REGRESSION
    with pytest.raises(ValueError):
        overall_verdict([])


# --- reports ---------------------------------------------------------------------------------------------


def three_results() -> list[MetricResult]:
    base, same = table(decreases=0, increases=0, both_pass=5, both_fail=5)
    odd = MetricSpec('tricky <name> & "quotes" | pipe', "binary")
    return [
        compare_metric(ACCURACY, base, same),
        compare_metric(odd, *table(decreases=2, increases=1, both_pass=5, both_fail=2)),
        compare_metric(
            MetricSpec("exact_match", "binary"), *table(decreases=30, increases=0, both_pass=5, both_fail=5)
        ),
    ]


def test_json_report_parses_and_carries_the_numbers() -> None:
    doc = json.loads(render_json(three_results(), "run-a", "run-b"))
    assert doc["verdict"] == "regression" and doc["exit_code"] == 1
    assert (doc["baseline_run"], doc["candidate_run"]) == ("run-a", "run-b")
    first, second, third = doc["metrics"]
    assert [m["verdict"] for m in doc["metrics"]] == ["pass", "inconclusive", "regression"]
    assert first["delta"] == 0.0 and first["n_paired"] == 10
    assert second["items_needed"] > 10 and second["effect"]["discordant_decreases"] == 2
    assert third["p_value"] < 0.001 and third["delta_confidence"] == pytest.approx(0.9)
    assert third["baseline"]["n_items"] == 40 and third["margin"] == 0.02


def test_json_report_writes_nan_as_null() -> None:
    result = compare_metric(ACCURACY, MetricValues({"a": [1.0]}), MetricValues({"b": [1.0]}))
    doc = json.loads(render_json([result], "a", "b"))
    assert doc["metrics"][0]["p_value"] is None and doc["metrics"][0]["baseline"]["low"] is None


def test_junit_report_fails_regressions_and_skips_inconclusive() -> None:
    root = ET.fromstring(render_junit(three_results(), "run-a", "run-b"))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases][1] == 'tricky <name> & "quotes" | pipe'
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    skipped = cases[1].find("skipped")
    assert skipped is not None and "paired items would likely decide" in (skipped.get("message") or "")
    failure = cases[2].find("failure")
    assert failure is not None and (failure.get("message") or "").startswith("Regression")
    assert json.loads(cases[2].findtext("system-out") or "")["verdict"] == "regression"


def test_markdown_report() -> None:
    text = render_markdown(three_results(), "run-a", "run-b")
    assert text.startswith("# Quality gate: REGRESSION\n")
    assert "Baseline `run-a`, candidate `run-b` (exit code 1)." in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 4  # header and three metrics
    assert r'tricky &lt;name&gt; & "quotes" \| pipe' in text  # no stray column, no HTML tag
    assert all(row.count(" | ") == rows[0].count(" | ") for row in rows)
    assert "| **regression** | 87.5% [" in text
    assert "- **accuracy**: Identical results" in text


def test_the_examples_in_docs_gate_md_run() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "gate.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) == 2  # on stored runs (the evaluations service), on values
    for block in blocks:
        exec(compile(block, "docs/gate.md", "exec"), {})


def test_items_needed_when_every_item_got_worse_by_the_same() -> None:
    # 3 items, all pass -> fail: no spread, yet an exact test decides at 5 items (0.5 ** 5 < 0.05)
    base, cand = table(decreases=3, increases=0, both_pass=0, both_fail=0)
    result = compare_metric(ACCURACY, base, cand, margin=0.02)
    assert result.verdict is GateVerdict.INCONCLUSIVE and result.items_needed == 5
    assert "5 paired items would likely decide" in result.explanation
