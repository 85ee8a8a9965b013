"""The non-inferiority gate's decision (:func:`decide`): each defect of issue 20 has a test here that
fails on the code before it, plus the planning of the next look and the reports."""

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
    GateDecision,
    GateVerdict,
    Margin,
    MetricInput,
    MetricSpec,
    MetricValues,
    compare_metric,
    decide,
    default_margin,
    holm,
    look_alpha,
    overall_verdict,
    parse_margins,
    render_json,
    render_junit,
    render_markdown,
)
from pilothouse.evals.gate._inference import clopper_pearson_upper, mid_p_mcnemar, sign_flip_p
from pilothouse.evals.stats import _normal_quantile

ACCURACY = MetricSpec("accuracy", "binary")
JUDGE = MetricSpec("judge_score", "continuous")
LATENCY = MetricSpec("latency_ms", "continuous", higher_is_better=False)


def table(
    decreases: int, increases: int, both_pass: int, both_fail: int, epochs: int = 1
) -> tuple[MetricValues, MetricValues]:
    """Pass/fail runs with the given paired 2x2 table (every epoch of an item the same)."""
    pairs = (
        [(1.0, 0.0)] * decreases
        + [(0.0, 1.0)] * increases
        + [(1.0, 1.0)] * both_pass
        + [(0.0, 0.0)] * both_fail
    )
    base = {f"q{i}": [b] * epochs for i, (b, _) in enumerate(pairs)}
    cand = {f"q{i}": [c] * epochs for i, (_, c) in enumerate(pairs)}
    return MetricValues(base), MetricValues(cand)


def continuous(values: np.ndarray, unmeasured: int = 0) -> MetricValues:
    return MetricValues({f"q{i}": [float(v)] for i, v in enumerate(values)}, unmeasured)


def without(run: MetricValues, items: list[str]) -> MetricValues:
    """The run with ``items`` unmeasured (errors, timeouts): absent from the values, named as unmeasured."""
    kept = {k: v for k, v in run.by_item.items() if k not in items}
    return MetricValues(kept, len(items), frozenset(items))


def test_exit_codes() -> None:
    assert [v.exit_code for v in GateVerdict] == [0, 1, 3]
    assert GateVerdict("regression") is GateVerdict.REGRESSION and str(GateVerdict.PASS) == "pass"


# --- defect 1: unmeasured items cannot buy a pass ----------------------------------------------------


def test_a_candidate_that_errors_where_it_would_fail_does_not_pass() -> None:
    base, cand = table(decreases=10, increases=0, both_pass=90, both_fail=0)
    erring = without(cand, [f"q{i}" for i in range(10)])  # errors exactly where it fails
    result = compare_metric(ACCURACY, base, erring, margin=0.05)
    assert result.verdict is not GateVerdict.PASS
    assert result.n_imputed == 10 and result.worst_delta == pytest.approx(-0.10)
    assert result.delta == 0.0  # raw: the measured pairs agree
    assert "did not score 10 items the baseline measured" in result.explanation
    # failing instead of erring gives the same pass test, so erring is never better than failing
    assert compare_metric(ACCURACY, base, cand, margin=0.05).p_pass == pytest.approx(result.p_pass)


def test_a_candidate_that_errors_on_49_of_50_items_does_not_pass_and_on_all_is_a_regression() -> None:
    base, cand = table(decreases=0, increases=0, both_pass=50, both_fail=0)
    result = compare_metric(ACCURACY, base, without(cand, [f"q{i}" for i in range(1, 50)]), margin=0.5)
    assert result.verdict is GateVerdict.INCONCLUSIVE
    broken = compare_metric(ACCURACY, base, without(cand, [f"q{i}" for i in range(50)]))
    assert broken.verdict is GateVerdict.REGRESSION
    assert broken.explanation.startswith("Regression: the candidate measured none of the 50 items")


def test_a_continuous_metric_counts_unscored_items_at_the_worst_value_seen() -> None:
    rng = np.random.default_rng(3)
    quality = rng.normal(3.5, 0.5, 200)
    base, cand = continuous(quality), continuous(quality + rng.normal(0, 0.05, 200))
    lost = [f"q{i}" for i in range(20)]
    erring = without(cand, lost)
    result = compare_metric(JUDGE, base, erring, margin=0.1)
    worst = min(min(v) for run in (base, erring) for v in run.by_item.values())
    expected = np.mean([erring.by_item.get(k, [worst])[0] - base.by_item[k][0] for k in base.by_item])
    assert result.worst_delta == pytest.approx(expected) and result.worst_delta < -0.1
    assert result.verdict is not GateVerdict.PASS
    assert compare_metric(JUDGE, base, cand, margin=0.1).verdict is GateVerdict.PASS


def test_items_the_candidate_was_not_run_on_count_at_their_worst() -> None:
    # a candidate run on the 210 of 300 items it passes (same ids): absent is no better than erring
    base, cand = table(decreases=90, increases=0, both_pass=210, both_fail=0)
    subset = MetricValues({k: v for k, v in cand.by_item.items() if v == [1.0]})
    result = compare_metric(ACCURACY, base, subset)
    assert result.verdict is not GateVerdict.PASS and result.n_imputed == 90
    assert result.worst_delta == pytest.approx(-0.30)
    # no number of items can make it pass while those stay unscored, and the advice says so
    assert result.items_needed is None and "more items cannot make it pass" in result.explanation


def test_a_candidate_far_below_the_margin_never_passes_on_skewed_differences() -> None:
    # 240 of 300 items lose 0.1, one gains 1: Johnson's correction alone turned back on itself here
    base = MetricValues({f"q{k}": [0.0 if k == 0 else 1.0] for k in range(300)})
    cand = MetricValues({f"q{k}": [1.0 if k == 0 else 0.9 if k <= 240 else 1.0] for k in range(300)})
    result = decide([MetricInput(JUDGE, base, cand, margin=0.02)]).results[0]
    assert result.verdict is GateVerdict.REGRESSION and result.p_pass > 0.5


def test_few_small_losses_among_many_items_pass_within_a_wide_margin() -> None:
    scores = np.random.default_rng(1).integers(2, 6, 1000).astype(float)
    base = continuous(scores)
    for losses, test in ((16, "empirical Bernstein"), (20, "skewness-corrected t")):  # of 1,000 items
        cand = continuous(np.where(np.arange(1000) < losses, scores - 1, scores))
        result = decide([MetricInput(JUDGE, base, cand, margin=0.1)]).results[0]
        assert result.verdict is GateVerdict.PASS, result.explanation
        assert test in result.pass_test


def test_unmeasured_in_the_baseline_only_is_excluded_not_imputed() -> None:
    base, cand = table(decreases=0, increases=0, both_pass=300, both_fail=100)
    result = compare_metric(ACCURACY, without(base, ["q0", "q1"]), cand)
    assert result.n_imputed == 0 and result.n_excluded == 2 and result.verdict is GateVerdict.PASS


# --- defect 2: no shortcut pass on all-zero differences ---------------------------------------------


@pytest.mark.parametrize(("n", "verdict"), [(5, "inconclusive"), (150, "inconclusive"), (160, "pass")])
def test_identical_results_pass_only_when_the_exact_bound_clears_the_margin(n: int, verdict: str) -> None:
    base, cand = table(decreases=0, increases=0, both_pass=n, both_fail=0)
    result = compare_metric(ACCURACY, base, cand)  # 2 points at look 1: (0.98)**n < 0.045 from n = 154
    assert result.verdict == verdict
    assert (clopper_pearson_upper(0, n, 0.045) < 0.02) == (verdict == "pass")
    if verdict == "inconclusive":
        assert result.items_needed is not None and result.items_needed > n
        assert "identical results" in result.explanation


def test_identical_repeated_or_continuous_results_need_the_bound_too() -> None:
    values = MetricValues({f"q{i}": [3.0 + i % 3, 3.5 + i % 3] for i in range(8)})
    assert compare_metric(JUDGE, values, values, margin=0.1).verdict is GateVerdict.INCONCLUSIVE
    assert compare_metric(JUDGE, values, values, margin=2.0).verdict is GateVerdict.PASS


# --- defect 3: Holm over the gated metrics ----------------------------------------------------------


def test_holm_controls_the_family_of_metrics() -> None:
    base, cand = table(decreases=5, increases=0, both_pass=30, both_fail=5)  # mid-p 1/64
    alone = decide([MetricInput(ACCURACY, base, cand)])
    assert alone.verdict is GateVerdict.REGRESSION
    five = decide([MetricInput(MetricSpec(f"m{k}", "binary"), base, cand) for k in range(5)])
    assert five.verdict is GateVerdict.INCONCLUSIVE  # 5 x 1/64 = 0.078 > 0.045
    first = five.results[0]
    assert first.p_value == pytest.approx(1 / 64) and first.p_adjusted == pytest.approx(5 / 64)
    assert "Holm-adjusted 0.0781" in first.explanation
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


# --- defect 5 and 11: exact tests at small n, repeats never change a deterministic verdict -----------


def test_repeats_of_deterministic_outcomes_do_not_change_the_verdict() -> None:
    once = compare_metric(ACCURACY, *table(decreases=3, increases=0, both_pass=17, both_fail=0))
    thrice = compare_metric(ACCURACY, *table(decreases=3, increases=0, both_pass=17, both_fail=0, epochs=3))
    assert once.verdict is thrice.verdict is GateVerdict.INCONCLUSIVE
    assert once.p_value == thrice.p_value == pytest.approx(0.0625)  # mid-p McNemar, 3 of 3 lost


def test_few_changed_continuous_items_use_the_exact_sign_flip_test() -> None:
    rng = np.random.default_rng(4)
    base = rng.normal(3, 1, 40)
    cand = base.copy()
    cand[:3] -= 1.0  # three items changed: at best p = 1/8
    result = compare_metric(JUDGE, continuous(base), continuous(cand))
    assert result.regression_test == "exact sign-flip test" and result.p_value == pytest.approx(0.125)
    assert result.verdict is not GateVerdict.REGRESSION


def test_mid_p_mcnemar_and_the_sign_flip_tests() -> None:
    assert mid_p_mcnemar(10, 2)[0] == pytest.approx(79 / 4096 - math.comb(12, 10) / 4096 / 2)
    assert mid_p_mcnemar(0, 0) == (0.5, 0.5)
    rng = np.random.default_rng(5)
    small = rng.normal(-0.2, 1, 15)
    low, high, test = sign_flip_p(small)
    assert test == "exact sign-flip test" and low + high >= 1.0
    medium = rng.normal(-0.5, 1, 60)
    assert sign_flip_p(medium, seed=1)[2] == "Monte-Carlo sign-flip test"
    assert sign_flip_p(medium, seed=1) == sign_flip_p(medium, seed=1)  # seeded
    assert sign_flip_p(rng.normal(0, 1, 400))[2] == "t test"


# --- defect 6: looks spend alpha ---------------------------------------------------------------------


def test_looks_spend_alpha_and_the_shares_sum_to_alpha() -> None:
    assert look_alpha(0.05, 1) == pytest.approx(0.045) and look_alpha(0.05, 2) == pytest.approx(0.0025)
    assert sum(look_alpha(0.05, k) for k in range(1, 60)) == pytest.approx(0.05)
    base, cand = table(decreases=5, increases=0, both_pass=30, both_fail=5)  # mid-p 1/64
    first = decide([MetricInput(ACCURACY, base, cand)], look=1)
    second = decide([MetricInput(ACCURACY, base, cand)], look=2)
    assert (first.verdict, second.verdict) == (GateVerdict.REGRESSION, GateVerdict.INCONCLUSIVE)
    assert second.look == 2 and second.look_alpha == pytest.approx(0.0025)
    assert "alpha 0.0025" in second.results[0].explanation
    with pytest.raises(ValueError, match="looks are numbered from 1"):
        decide([MetricInput(ACCURACY, base, cand)], look=0)


# --- defect 7: items needed from the margin and the discordance -------------------------------------


def test_items_needed_is_planned_from_the_margin_and_the_discordance_for_the_next_look() -> None:
    base, cand = table(decreases=6, increases=4, both_pass=60, both_fail=30)
    result = compare_metric(ACCURACY, base, cand)
    assert result.verdict is GateVerdict.INCONCLUSIVE
    z = _normal_quantile(1 - look_alpha(0.05, 2)) + _normal_quantile(0.85)
    discordance = clopper_pearson_upper(10, 100, 0.2)  # 10 of 100 discordant, at its 80% upper bound
    expected = math.ceil(z * z * discordance / 0.02**2)  # margin 2 points, true difference 0
    assert result.items_needed == expected
    assert f"about {expected:,} paired items would likely decide at the next look" in result.explanation
    # the observed difference does not enter: a better-looking sample plans the same
    better = compare_metric(ACCURACY, *table(decreases=4, increases=6, both_pass=60, both_fail=30))
    assert better.items_needed == expected


def test_a_zero_margin_never_advises_setting_a_margin() -> None:
    base, cand = table(decreases=1, increases=1, both_pass=50, both_fail=48)
    result = compare_metric(ACCURACY, base, cand, margin=0.0)
    assert result.verdict is GateVerdict.INCONCLUSIVE and result.items_needed is None
    assert "set a margin" not in result.explanation
    assert "with a margin of 0 the gate can show a regression but never a pass" in result.explanation


# --- defect 8: groups of related items --------------------------------------------------------------


def test_grouped_items_are_tested_per_group() -> None:
    base, cand = table(decreases=10, increases=0, both_pass=20, both_fail=0)
    groups = {f"q{i}": f"doc{i // 10}" for i in range(30)}  # all ten losses in one document
    items = compare_metric(ACCURACY, base, cand)
    grouped = decide([MetricInput(ACCURACY, base, cand, groups=groups)]).results[0]
    assert items.verdict is GateVerdict.REGRESSION  # ten independent losses would be significant
    assert grouped.verdict is GateVerdict.INCONCLUSIVE and grouped.n_groups == 3
    assert grouped.p_value == pytest.approx(0.5) and "on 3 groups" in grouped.test
    assert "groups would likely decide" in grouped.explanation


# --- defect 10: direction and margins per metric ----------------------------------------------------


def test_lower_is_better_metrics_are_oriented() -> None:
    rng = np.random.default_rng(1)
    base = rng.lognormal(6.5, 0.4, 400)
    slower = compare_metric(LATENCY, continuous(base), continuous(base * 1.15 + rng.normal(0, 5, 400)))
    assert slower.verdict is GateVerdict.REGRESSION and slower.delta > 0
    assert slower.explanation.startswith("Regression: the candidate scores higher")
    faster = compare_metric(LATENCY, continuous(base), continuous(base * 0.9 + rng.normal(0, 5, 400)))
    assert faster.verdict is GateVerdict.PASS and faster.delta < 0
    assert slower.margin == pytest.approx(0.02 * float(np.mean(base)))  # default: 2% of the baseline


def test_a_relative_margin_scales_with_the_failure_rate() -> None:
    # 1.2% failures nearly doubled: a 1-point loss, well inside an absolute 2-point margin
    base, cand = table(decreases=12, increases=2, both_pass=976, both_fail=10)
    absolute = compare_metric(ACCURACY, base, cand, margin=0.02)
    relative = compare_metric(ACCURACY, base, cand, margin=Margin(0.1, relative=True))
    assert relative.margin == pytest.approx(0.1 * 0.012)
    assert absolute.verdict is GateVerdict.PASS
    assert relative.verdict is GateVerdict.REGRESSION


def test_margins_as_users_write_them() -> None:
    assert parse_margins(["0.02", "latency_ms=10%", "faithful:0.01"]) == {
        None: Margin(0.02),
        "latency_ms": Margin(0.1, relative=True),
        "faithful": Margin(0.01),
    }
    assert parse_margins(0.05) == {None: Margin(0.05)} and parse_margins({"a": "5%"}) == {
        "a": Margin(0.05, True)
    }
    for bad in ("lots", "a=-1", "=0.1", "a=nan"):
        with pytest.raises(ValueError, match="must"):
            parse_margins([bad])


# --- the rest of the decision ----------------------------------------------------------------------


def test_clearly_worse_candidate_is_a_regression() -> None:
    base, cand = table(decreases=30, increases=5, both_pass=200, both_fail=65)
    result = compare_metric(ACCURACY, base, cand)
    assert result.verdict is GateVerdict.REGRESSION
    assert result.regression_test == "mid-p McNemar" and result.p_value < 1e-4
    assert result.delta == pytest.approx(-25 / 300) and result.delta_high < 0
    assert result.explanation.startswith("Regression: the candidate scores lower by 8.3 pts")


def test_equal_candidate_with_enough_items_passes_at_the_default_margin() -> None:
    base, cand = table(decreases=75, increases=75, both_pass=2000, both_fail=850)
    result = compare_metric(ACCURACY, base, cand)
    assert result.margin == DEFAULT_BINARY_MARGIN and result.verdict is GateVerdict.PASS
    assert result.pass_test == "Tango score test"  # above 300 items
    small = compare_metric(
        ACCURACY, *table(decreases=5, increases=5, both_pass=200, both_fail=90), margin=0.08
    )
    assert small.pass_test == "exact unconditional (Tango score)" and small.verdict is GateVerdict.PASS


def test_a_small_loss_inside_the_margin_passes_even_when_significant() -> None:
    base, cand = table(decreases=260, increases=180, both_pass=7000, both_fail=2560)
    result = compare_metric(ACCURACY, base, cand, margin=0.02)
    assert result.p_value < 0.05 and result.delta_high < 0  # significantly worse, by under a point
    assert result.verdict is GateVerdict.PASS


def test_continuous_metrics() -> None:
    rng = np.random.default_rng(2)
    quality = rng.normal(3.5, 1, 200)
    base = continuous(quality + rng.normal(0, 0.3, 200), unmeasured=4)
    cand = continuous(quality - 0.5 + rng.normal(0, 0.3, 200), unmeasured=1)
    result = compare_metric(JUDGE, base, cand)
    assert result.regression_test == "t test" and result.verdict is GateVerdict.REGRESSION  # 200 changed
    assert (result.unmeasured_baseline, result.unmeasured_candidate) == (4, 1)


def test_no_paired_items_is_inconclusive() -> None:
    result = compare_metric(ACCURACY, MetricValues({"a": [1.0]}), MetricValues({"b": [1.0], "c": []}, 2))
    assert result.verdict is GateVerdict.INCONCLUSIVE
    assert result.n_paired == 0 and result.n_excluded == 2 and math.isnan(result.p_value)


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
    with pytest.raises(ValueError, match="no metric"):
        decide([])


def test_default_margin() -> None:
    assert default_margin(ACCURACY, 0.7) == 0.02
    assert default_margin(JUDGE, -4.0) == pytest.approx(0.08)
    assert default_margin(JUDGE, math.nan) == 0.0


def test_overall_verdict() -> None:
    base, same = table(decreases=0, increases=0, both_pass=300, both_fail=100)
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


def three_metrics() -> GateDecision:
    base, same = table(decreases=0, increases=0, both_pass=300, both_fail=100)
    odd = MetricSpec('tricky <name> & "quotes" | pipe', "binary")
    return decide(
        [
            MetricInput(ACCURACY, base, same),
            MetricInput(odd, *table(decreases=2, increases=1, both_pass=5, both_fail=2)),
            MetricInput(
                MetricSpec("exact_match", "binary"),
                *table(decreases=30, increases=0, both_pass=5, both_fail=5),
            ),
        ]
    )


def test_json_report_parses_and_carries_the_numbers() -> None:
    doc = json.loads(render_json(three_metrics(), "run-a", "run-b", not_gated=["new_check"]))
    assert doc["verdict"] == "regression" and doc["exit_code"] == 1
    assert (doc["baseline_run"], doc["candidate_run"]) == ("run-a", "run-b")
    assert (
        doc["look"] == 1 and doc["look_alpha"] == pytest.approx(0.045) and doc["not_gated"] == ["new_check"]
    )
    first, second, third = doc["metrics"]
    assert [m["verdict"] for m in doc["metrics"]] == ["pass", "inconclusive", "regression"]
    assert first["delta"] == 0.0 and first["n_paired"] == 400
    assert second["items_needed"] > 10 and second["effect"]["discordant_decreases"] == 2
    assert third["p_value"] < 0.001 and third["p_adjusted"] == pytest.approx(3 * third["p_value"])
    assert third["delta_confidence"] == pytest.approx(0.91) and third["margin"] == 0.02


def test_json_report_writes_nan_as_null() -> None:
    result = decide([MetricInput(ACCURACY, MetricValues({"a": [1.0]}), MetricValues({"b": [1.0]}))])
    doc = json.loads(render_json(result, "a", "b"))
    assert doc["metrics"][0]["p_value"] is None and doc["metrics"][0]["baseline"]["low"] is None


def test_junit_report_fails_regressions_and_skips_inconclusive() -> None:
    root = ET.fromstring(render_junit(three_metrics(), "run-a", "run-b"))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    props = {p.get("name"): p.get("value") for p in root.findall("./testsuite/properties/property")}
    assert props["look"] == "1" and props["look_alpha"] == "0.045"
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases][1] == 'tricky <name> & "quotes" | pipe'
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    skipped = cases[1].find("skipped")
    assert skipped is not None and "paired items would likely decide" in (skipped.get("message") or "")
    failure = cases[2].find("failure")
    assert failure is not None and (failure.get("message") or "").startswith("Regression")


def test_markdown_report() -> None:
    text = render_markdown(three_metrics(), "run-a", "run-b", not_gated=["new_check"])
    assert text.startswith("# Quality gate: REGRESSION\n")
    assert "Baseline `run-a`, candidate `run-b` (exit code 1)." in text
    assert "Look 1 of this baseline and candidate configuration: it spends alpha 0.045 of 0.05" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 4  # header and three metrics
    assert r'tricky &lt;name&gt; & "quotes" \| pipe' in text  # no stray column, no HTML tag
    assert all(row.count(" | ") == rows[0].count(" | ") for row in rows)
    assert "| **regression** | 87.5% [" in text and "p (worse, Holm)" in text
    assert "- **accuracy**: No regression: identical results on all 400 paired items" in text
    assert "Not gated (only the candidate has them): new_check" in text


def test_the_examples_in_docs_gate_md_run() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "gate.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) == 3  # on stored runs (the evaluations service), on values, sequential (canaries)
    for block in blocks:
        exec(compile(block, "docs/gate.md", "exec"), {})
