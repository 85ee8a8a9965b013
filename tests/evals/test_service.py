"""The evaluations service on stored runs: resolving runs, the metrics compared, the judges' calibration
checks, the settings, the changed items and the warnings of ``compare_runs``; ``run``; curation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilothouse.domain.datasets import DatasetError
from pilothouse.domain.evals import RunStatus
from pilothouse.domain.queries import TraceQuery
from pilothouse.evals import ComparisonError, Evaluations, comparison_document
from pilothouse.evals.gate import GateVerdict, gate_document, render_json
from pilothouse.evals.spec import EvalSpec
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head
from tests.evals.stored import JUDGED_SPEC, calibrate, judged_spec, store_run


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Evaluations]:
    store = SqlStore.from_url(sqlite_at_head(tmp_path / "service.db"))
    yield Evaluations.over(store)
    store.close()


def _refusal(service: Evaluations, *args: str, **options: object) -> ComparisonError:
    with pytest.raises(ComparisonError) as caught:
        service.compare_runs(*args, **options)  # type: ignore[arg-type]
    return caught.value


def test_verdicts_per_metric_and_overall(service: Evaluations) -> None:
    base = store_run(service.evals, {"contains": [1.0] * 100, "exact": [1.0] * 100})
    worse = store_run(service.evals, {"contains": [1.0] * 100, "exact": [1.0] * 70 + [0.0] * 30})
    comparison = service.compare_runs(base.id, worse.id[:10], margin=0.05)  # an id prefix is enough
    assert comparison.candidate.id == worse.id
    assert comparison.metrics == ("contains", "exact")
    assert [r.verdict for r in comparison.results] == [GateVerdict.PASS, GateVerdict.REGRESSION]
    assert comparison.verdict is GateVerdict.REGRESSION
    assert comparison.judges == {} and comparison.warnings == ()
    only = service.compare_runs(base, worse, metrics=["contains", "contains"], margin=0.05)  # runs too
    assert only.metrics == ("contains",) and only.verdict is GateVerdict.PASS


def test_alpha_and_margin_reach_the_statistics(service: Evaluations) -> None:
    base = store_run(service.evals, {"contains": [1.0] * 20})
    three_worse = store_run(service.evals, {"contains": [1.0] * 17 + [0.0] * 3})  # exact p 0.125
    strict = service.compare_runs(base.id, three_worse.id)
    lenient = service.compare_runs(base.id, three_worse.id, alpha=0.2)
    assert strict.verdict is GateVerdict.INCONCLUSIVE and strict.alpha == 0.05
    assert lenient.verdict is GateVerdict.REGRESSION and lenient.results[0].alpha == 0.2
    wide = service.compare_runs(base.id, three_worse.id, margin=0.5)
    assert wide.verdict is GateVerdict.PASS and wide.results[0].margin == 0.5


def test_runs_and_metrics_that_cannot_be_compared(service: Evaluations) -> None:
    base = store_run(service.evals, {"contains": [1.0] * 5})
    other_metric = store_run(service.evals, {"exact": [1.0] * 5})
    elsewhere = store_run(service.evals, {"contains": [1.0] * 5}, project="p2")

    unknown = _refusal(service, base.id, "0123456789abcdef")
    assert unknown.code == "eval_run_not_found" and unknown.param == "candidate"
    assert str(unknown) == "no eval run '0123456789abcdef'"
    hidden = _refusal(service, base.id, elsewhere.id, project_id="default")
    assert hidden.code == "eval_run_not_found" and "in project 'default'" in str(hidden)
    assert service.compare_runs(base.id, elsewhere.id, margin=0.5).verdict is GateVerdict.PASS  # any

    itself = _refusal(service, base.id, base.id)
    assert itself.code == "same_run" and "the baseline and the candidate are the same run" in str(itself)
    missing = _refusal(service, base.id, elsewhere.id, metrics=["rubric"])
    assert missing.code == "metric_not_shared" and missing.param == "metric"
    assert str(missing) == "metric 'rubric' is not in both runs (baseline: contains; candidate: contains)"
    disjoint = _refusal(service, base.id, other_metric.id)
    assert disjoint.code == "no_shared_metric"


@pytest.mark.parametrize(
    ("options", "param", "message"),
    [
        ({"alpha": 0.7}, "alpha", "--alpha must be between 0 and 0.5, not 0.7"),
        ({"alpha": 0.0}, "alpha", "--alpha must be between 0 and 0.5, not 0.0"),
        ({"margin": -0.1}, "margin", "--margin must be a number >= 0, not -0.1"),
        ({"margin": float("nan")}, "margin", "--margin must be a number >= 0, not nan"),
        (
            {"margin": "x=lots"},
            "margin",
            "--margin must be a number such as 0.02, a share such as 10%, or METRIC=0.02, not 'x=lots'",
        ),
        ({"margin": ["=0.1"]}, "margin", "--margin must name a metric before '=', not '=0.1'"),
        ({"margin": "nope=0.1"}, "margin", "--margin names 'nope', which is not gated (gated: contains)"),
        (
            {"lower_is_better": ["nope"]},
            "lower_is_better",
            "--lower-is-better names 'nope', which is not gated (gated: contains)",
        ),
        ({"min_kappa": 2.0}, "min_kappa", "--min-kappa must be between -1 and 1, not 2.0"),
        ({"changed_limit": -1}, "changed_limit", "--limit must be a whole number >= 0, not -1"),
    ],
)
def test_bad_settings_name_the_setting(
    service: Evaluations, options: dict[str, float], param: str, message: str
) -> None:
    base = store_run(service.evals, {"contains": [1.0] * 5})
    cand = store_run(service.evals, {"contains": [1.0] * 5})
    error = _refusal(service, base.id, cand.id, **options)
    assert error.code == "invalid_parameter" and error.param == param
    cli = {
        "alpha": "--alpha",
        "margin": "--margin",
        "min_kappa": "--min-kappa",
        "changed_limit": "--limit",
        "lower_is_better": "--lower-is-better",
    }
    assert error.message(cli) == message
    assert str(error).startswith(f"{param} ")  # named by keyword unless spelled otherwise


def test_an_uncalibrated_judge_is_refused_unless_allowed(service: Evaluations) -> None:
    base = store_run(service.evals, {"contains": [1.0] * 10, "quality": [1.0] * 10}, spec=JUDGED_SPEC)
    cand = store_run(service.evals, {"contains": [1.0] * 10, "quality": [1.0] * 10}, spec=JUDGED_SPEC)
    error = _refusal(service, base.id, cand.id)
    assert error.code == "uncalibrated_judge" and error.param == "allow_uncalibrated"
    assert error.message({"allow_uncalibrated": "--allow-uncalibrated"}) == (
        "metric 'quality' is graded by a judge (rubric, model judge) with no calibration: run 'pilothouse "
        "judge calibrate SPEC.yaml --labels LABELS.jsonl --scorer quality' (--project default), or pass "
        "--allow-uncalibrated"
    )
    assert _refusal(service, base.id, cand.id, metrics=["quality"]).code == "uncalibrated_judge"
    assert service.compare_runs(base.id, cand.id, metrics=["contains"]).judges == {}  # not gated on it

    allowed = service.compare_runs(base.id, cand.id, allow_uncalibrated=True, margin=0.5)
    assert allowed.judges == {"quality": None} and allowed.uncalibrated == ("quality",)
    assert allowed.verdict is GateVerdict.PASS

    calibration = calibrate(service.evals, JUDGED_SPEC, "quality", kappa=0.35)
    calibrated = service.compare_runs(base.id, cand.id)
    assert calibrated.judges == {"quality": calibration} and calibrated.uncalibrated == ()
    weak = _refusal(service, base.id, cand.id, min_kappa=0.4, allow_uncalibrated=True)  # allowing is moot
    assert weak.code == "weak_judge" and weak.param == "min_kappa"
    assert f"calibration {calibration.id} (v1) has kappa 0.350, below min_kappa 0.4" in str(weak)
    assert service.compare_runs(base.id, cand.id, min_kappa=0.3, margin=0.5).verdict is GateVerdict.PASS


def test_a_calibration_that_read_nothing_counts_as_none(service: Evaluations) -> None:
    base = store_run(service.evals, {"quality": [1.0] * 10}, spec=JUDGED_SPEC)
    cand = store_run(service.evals, {"quality": [1.0] * 10}, spec=JUDGED_SPEC)
    calibrate(service.evals, JUDGED_SPEC, "quality", readable=False)
    error = _refusal(service, base.id, cand.id)
    assert error.code == "uncalibrated_judge"
    assert "could read none of the judge's 12 replies" in str(error)
    assert "has kappa undefined, below min_kappa 0.1" in str(
        _refusal(service, base.id, cand.id, allow_uncalibrated=True, min_kappa=0.1)
    )
    assert service.compare_runs(base.id, cand.id, allow_uncalibrated=True).judges["quality"] is not None


def test_runs_graded_by_different_judges_need_both_calibrated(service: Evaluations) -> None:
    other = judged_spec("judge-2")
    base = store_run(service.evals, {"quality": [1.0] * 10}, spec=other)
    cand = store_run(service.evals, {"quality": [1.0] * 10}, spec=JUDGED_SPEC)
    calibrate(service.evals, JUDGED_SPEC, "quality")  # the candidate's judge only
    error = _refusal(service, base.id, cand.id)
    assert "(rubric, model judge-2) with no calibration" in str(error)
    calibrate(service.evals, other, "quality")
    comparison = service.compare_runs(base.id, cand.id)
    assert comparison.warnings == ("the runs graded 'quality' with different judges (or judge specs)",)
    assert comparison.judges["quality"] is not None
    assert comparison.judges["quality"].judge_model == "judge"  # the candidate's judge is shown


def test_warnings_for_unfinished_runs_and_other_datasets(service: Evaluations) -> None:
    base = store_run(service.evals, {"contains": [1.0] * 10}, status=RunStatus.INTERRUPTED)
    cand = store_run(service.evals, {"contains": [1.0] * 10}, dataset="other")
    comparison = service.compare_runs(base.id, cand.id)
    assert comparison.warnings == (
        f"run {base.id} is interrupted, not completed",
        "the runs used different datasets (fixed@1 and other@1); items are paired by id",
    )


def test_changed_items_biggest_losses_first_with_outputs_and_inputs(service: Evaluations) -> None:
    base = store_run(
        service.evals,
        {"contains": [1.0, 1.0, 0.0, 1.0, 1.0, None], "score": [0.9, 0.5, 0.5, 0.5, 0.5, 0.5]},
        output="old",
    )
    cand = store_run(
        service.evals,
        {"contains": [0.0, 1.0, 1.0, 1.0, 0.0, 1.0], "score": [0.8, 0.5, 0.1, 0.5, 0.5, 0.5]},
        output="new",
    )
    comparison = service.compare_runs(base.id, cand.id)
    rows = [(c.item_id, c.metric, c.delta, c.paired) for c in comparison.changed]
    assert rows == [
        ("i000", "contains", -1.0, True),
        ("i004", "contains", -1.0, True),
        ("i002", "score", pytest.approx(-0.4), True),
        ("i000", "score", pytest.approx(-0.1), True),
        ("i005", "contains", 0.0, False),  # measured in the candidate only
        ("i002", "contains", 1.0, True),
    ]
    assert comparison.changed_total == 6
    tally = comparison.tallies["contains"]
    assert (tally.better, tally.worse, tally.same, tally.unpaired) == (1, 2, 2, 1)
    first = comparison.changed[0]
    assert (first.baseline_output, first.candidate_output) == ("old 0", "new 0")
    assert first.input is not None and first.input.input == {"k": 0}
    assert comparison.changed[4].baseline is None and comparison.changed[4].baseline_output == "old 5"

    two = service.compare_runs(base.id, cand.id, changed_limit=2)
    assert [c.item_id for c in two.changed] == ["i000", "i004"] and two.changed_total == 6
    every = service.compare_runs(base.id, cand.id, include_unchanged=True, changed_limit=None)
    assert every.changed_total == len(every.changed) == 12  # six items, two metrics
    none = service.compare_runs(base.id, cand.id, changed_limit=0)
    assert none.changed == () and none.tallies == comparison.tallies and none.changed_total == 6


def test_changed_items_compare_means_over_epochs(service: Evaluations) -> None:
    base = store_run(service.evals, {"contains": [(1.0, 1.0), (1.0, 0.0)]}, epochs=2)
    cand = store_run(service.evals, {"contains": [(1.0, 0.0), (0.0, 1.0)]}, epochs=2)
    comparison = service.compare_runs(base.id, cand.id)
    assert [(c.item_id, c.baseline, c.candidate) for c in comparison.changed] == [("i000", 1.0, 0.5)]
    assert comparison.tallies["contains"].same == 1


def test_the_json_document_extends_the_gate_report(service: Evaluations) -> None:
    base = store_run(service.evals, {"contains": [1.0] * 30, "quality": [1.0] * 30}, spec=JUDGED_SPEC)
    cand = store_run(
        service.evals, {"contains": [1.0] * 25 + [0.0] * 5, "quality": [1.0] * 30}, spec=JUDGED_SPEC
    )
    comparison = service.compare_runs(base.id, cand.id, allow_uncalibrated=True, changed_limit=2)
    document = comparison_document(comparison)
    report = json.loads(render_json(comparison.decision, base.id, cand.id, comparison.judges))
    assert json.loads(json.dumps(document, allow_nan=False))["metrics"] == report["metrics"]
    assert gate_document(comparison.decision, base.id, cand.id, comparison.judges)["verdict"] == "regression"
    assert document["look"] == 1 and document["look_alpha"] == pytest.approx(0.045)
    assert document["verdict"] == "regression" and document["exit_code"] == 1
    assert document["metrics"][1]["judge"] == {"calibrated": False}
    assert document["runs"]["candidate"]["id"] == cand.id and document["alpha"] == 0.05
    assert document["tallies"]["contains"] == {"better": 0, "worse": 5, "same": 25, "unpaired": 0}
    assert document["changed_total"] == 5 and len(document["changed"]) == 2
    assert document["changed"][0] == {
        "item_id": "i025",
        "metric": "contains",
        "baseline": 1.0,
        "candidate": 0.0,
        "delta": -1.0,
        "baseline_output": "out 25",
        "candidate_output": "out 25",
        "input": {"k": 25},
        "messages": None,
    }


def test_run_stores_a_run(service: Evaluations) -> None:
    spec = EvalSpec.create(
        dataset=[{"id": "a", "topic": "tides"}, {"id": "b", "topic": "comets"}],
        target=lambda variables: f"About {variables['topic']}.",
        scorers=[{"type": "contains", "value": "{{topic}}"}],
    )
    started = []
    run = asyncio.run(service.run(spec, on_start=started.append))
    assert [r.id for r in started] == [run.id] and run.status is RunStatus.COMPLETED
    assert run.summary is not None and run.summary.metric("contains").mean == 1.0  # type: ignore[union-attr]
    again = asyncio.run(service.run(spec))
    assert service.compare_runs(run.id, again.id, margin=0.9).verdict is GateVerdict.PASS


def test_curation_that_matches_no_trace_stores_nothing(service: Evaluations) -> None:
    with pytest.raises(DatasetError, match="no stored trace of project 'default' matches"):
        service.curate_from_traces("default", "golden", TraceQuery(model="no-such-model"))
    assert service.evals.list_datasets("default") == []


def test_a_metric_the_candidate_dropped_is_refused_unless_left_out(service: Evaluations) -> None:
    base = store_run(service.evals, {"contains": [1.0] * 200, "safety": [1.0] * 190 + [0.0] * 10})
    cand = store_run(service.evals, {"contains": [1.0] * 200, "new_check": [1.0] * 200})
    dropped = _refusal(service, base.id, cand.id)
    assert dropped.code == "metric_missing" and dropped.param == "metric"
    assert "the candidate lacks the baseline's metric 'safety'" in str(dropped)
    chosen = service.compare_runs(base.id, cand.id, metrics=["contains"])
    assert chosen.metrics == ("contains",) and chosen.not_gated == ("new_check",)
    assert comparison_document(chosen)["not_gated"] == ["new_check"]


def test_latency_is_built_in_and_lower_is_better(service: Evaluations) -> None:
    fast = [100.0 + k % 7 for k in range(200)]
    base = store_run(service.evals, {"contains": [1.0] * 200}, latency_ms=fast)
    slow = store_run(service.evals, {"contains": [1.0] * 200}, latency_ms=[v * 1.5 for v in fast])
    assert service.compare_runs(base.id, slow.id).metrics == ("contains",)  # gated only when named
    comparison = service.compare_runs(base.id, slow.id, metrics=["latency_ms"])
    latency = comparison.results[0]
    assert latency.metric.higher_is_better is False and latency.metric.kind == "continuous"
    assert latency.verdict is GateVerdict.REGRESSION and latency.delta > 0
    faster = service.compare_runs(slow.id, base.id, metrics=["latency_ms"], margin="latency_ms=10%")
    assert faster.verdict is GateVerdict.PASS
    assert faster.results[0].margin == pytest.approx(0.1 * 1.5 * sum(fast) / 200)  # 10% of the baseline
    # any other metric can be declared lower-is-better
    errors = store_run(service.evals, {"errors": [0.0] * 200})
    more = store_run(service.evals, {"errors": [1.0] * 40 + [0.0] * 160})
    named = service.compare_runs(errors.id, more.id, lower_is_better=["errors"])
    assert named.results[0].metric.higher_is_better is False and named.verdict is GateVerdict.REGRESSION
    assert service.compare_runs(errors.id, more.id).verdict is GateVerdict.PASS  # read as higher-better


def test_group_by_reads_the_datasets_metadata(service: Evaluations) -> None:
    docs = [{"doc": f"d{k // 10}"} for k in range(60)]
    base = store_run(service.evals, {"contains": [1.0] * 60}, metadata=docs)
    cand = store_run(service.evals, {"contains": [0.0] * 10 + [1.0] * 50}, metadata=docs)  # one document
    assert (
        service.compare_runs(base.id, cand.id).verdict is GateVerdict.REGRESSION
    )  # ten "independent" losses
    grouped = service.compare_runs(base.id, cand.id, group_by="doc")
    assert grouped.verdict is GateVerdict.INCONCLUSIVE and grouped.results[0].n_groups == 6
    assert grouped.group_by == "doc" and comparison_document(grouped)["group_by"] == "doc"
    missing = _refusal(service, base.id, cand.id, group_by="author")
    assert missing.code == "invalid_parameter" and missing.param == "group_by"
    assert "group_by 'author': 60 item(s) have no such metadata key" in str(missing)


def test_looks_are_counted_per_baseline_and_candidate_configuration(service: Evaluations) -> None:
    base = store_run(service.evals, {"contains": [1.0] * 40})
    spec = {"target": {"model": "candidate-a"}}
    first = store_run(service.evals, {"contains": [1.0] * 35 + [0.0] * 5}, spec=spec, name="try 1")
    again = store_run(service.evals, {"contains": [1.0] * 35 + [0.0] * 5}, spec=spec, name="try 2")
    other = store_run(service.evals, {"contains": [1.0] * 35 + [0.0] * 5}, spec={"target": {"model": "b"}})
    assert service.compare_runs(base.id, again.id).look == 1  # nothing recorded: this would be look 1
    recorded = service.compare_runs(base.id, first.id, record_look=True)
    assert (recorded.look, recorded.verdict) == (1, GateVerdict.REGRESSION)  # mid-p 1/64 < 0.045
    assert service.compare_runs(base.id, first.id, record_look=True).look == 1  # idempotent
    second = service.compare_runs(base.id, again.id, record_look=True)  # the same config, renamed
    assert second.look == 2 and second.look_alpha == pytest.approx(0.0025)
    assert second.verdict is GateVerdict.INCONCLUSIVE
    assert service.compare_runs(base.id, other.id).look == 1  # another configuration: its own looks
    assert service.compare_runs(base.id, first.id).look == 1  # re-gating the first run: still look 1
    # the same runs with other settings are another look: settings cannot be tried until one passes
    shopping = service.compare_runs(base.id, first.id, alpha=0.2, record_look=True)
    assert shopping.look == 3 and shopping.look_alpha == pytest.approx(0.2 * 0.1 * 2**-2)
