"""``/api/evals``: runs of the caller's project, and two runs compared with the quality gate, refusals
included (an uncalibrated judge is a 400, as ``pilothouse gate`` exits 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pilothouse.evals.runner import run_eval
from pilothouse.evals.spec import parse_spec
from pilothouse.store.evals import EvalStore
from tests.evals.conftest import explain_spec, write_yaml
from tests.evals.stored import JUDGED_SPEC, calibrate, store_run
from tests.server.conftest import Served


def _compare(served: Served, **params: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = served.client.get("/api/evals/compare", params=params, headers=served.auth)
    return response.status_code, response.json()


def test_runs_of_the_project_newest_first(served: Served) -> None:
    evals = EvalStore(served.store)
    first = store_run(evals, {"contains": [1.0, 0.0]}, project="p1")
    second = store_run(evals, {"contains": [1.0, 1.0]}, project="p1")
    store_run(evals, {"contains": [1.0]}, project="p2")
    listed = served.client.get("/api/evals/runs", headers=served.auth).json()["data"]
    assert [r["id"] for r in listed] == [second.id, first.id]
    assert listed[0]["status"] == "completed" and listed[0]["scorers"] == ["contains"]
    one = served.client.get(f"/api/evals/runs/{first.id[:8]}", headers=served.auth)
    assert one.status_code == 200 and one.json()["id"] == first.id and one.json()["spec"] == {}
    other = served.client.get(
        f"/api/evals/runs/{first.id}", headers={"Authorization": f"Bearer {served.other_key}"}
    )
    assert other.status_code == 404 and other.json()["error"]["code"] == "eval_run_not_found"
    assert served.client.get("/api/evals/runs").status_code == 401
    bad = served.client.get("/api/evals/runs?limit=lots", headers=served.auth)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


def test_compare_gives_the_verdicts_changed_items_and_warnings(served: Served) -> None:
    evals = EvalStore(served.store)
    base = store_run(evals, {"contains": [1.0] * 100}, project="p1")
    worse = store_run(evals, {"contains": [1.0] * 70 + [0.0] * 30}, project="p1", dataset="other")
    code, answer = _compare(served, baseline=base.id, candidate=worse.id[:12], changed_limit="5")
    assert code == 200, answer
    assert answer["verdict"] == "regression" and answer["exit_code"] == 1
    assert answer["baseline_run"] == base.id and answer["candidate_run"] == worse.id
    (metric,) = answer["metrics"]
    assert metric["metric"] == "contains" and metric["verdict"] == "regression" and metric["n_paired"] == 100
    assert metric["alpha"] == 0.05 and metric["margin"] == 0.02 and "judge" not in metric
    assert answer["tallies"] == {"contains": {"better": 0, "worse": 30, "same": 70, "unpaired": 0}}
    assert answer["changed_total"] == 30 and len(answer["changed"]) == 5
    assert answer["changed"][0] | {"input": None} == {
        "item_id": "i070",
        "metric": "contains",
        "baseline": 1.0,
        "candidate": 0.0,
        "delta": -1.0,
        "baseline_output": "out 70",
        "candidate_output": "out 70",
        "input": None,
        "messages": None,
    }
    assert answer["warnings"] == [
        "the runs used different datasets (fixed@1 and other@1); items are paired by id"
    ]
    assert answer["runs"]["candidate"]["dataset"] == "other"


def test_compare_refuses_an_uncalibrated_judge_like_the_gate(served: Served) -> None:
    evals = EvalStore(served.store)
    scores = {"contains": [1.0] * 50, "quality": [1.0] * 50}
    base = store_run(evals, scores, project="p1", spec=JUDGED_SPEC)
    cand = store_run(evals, scores, project="p1", spec=JUDGED_SPEC)
    code, answer = _compare(served, baseline=base.id, candidate=cand.id)
    assert code == 400, answer
    error = answer["error"]
    assert error["code"] == "uncalibrated_judge" and error["param"] == "allow_uncalibrated"
    assert error["message"].startswith(
        "Metric 'quality' is graded by a judge (rubric, model judge) with no calibration"
    )
    assert error["message"].endswith("or pass allow_uncalibrated.")
    code, answer = _compare(served, baseline=base.id, candidate=cand.id, allow_uncalibrated="true")
    assert code == 200 and answer["verdict"] == "inconclusive"  # identical on 50 items: not enough for 2 pts
    code, answer = _compare(
        served, baseline=base.id, candidate=cand.id, allow_uncalibrated="true", margin=["contains:0.1", "0.1"]
    )
    assert code == 200 and answer["verdict"] == "pass" and answer["look"] == 1
    assert answer["metrics"][1]["judge"] == {"calibrated": False}
    calibration = calibrate(evals, JUDGED_SPEC, "quality", project="p1", kappa=0.3)
    code, answer = _compare(served, baseline=base.id, candidate=cand.id)
    assert code == 200 and answer["metrics"][1]["judge"]["calibration"]["id"] == calibration.id
    code, answer = _compare(served, baseline=base.id, candidate=cand.id, min_kappa="0.4")
    assert code == 400 and answer["error"]["code"] == "weak_judge"


def test_alpha_reaches_the_comparison(served: Served) -> None:
    evals = EvalStore(served.store)
    base = store_run(evals, {"contains": [1.0] * 20}, project="p1")
    cand = store_run(evals, {"contains": [1.0] * 17 + [0.0] * 3}, project="p1")  # mid-p McNemar p 0.0625
    assert _compare(served, baseline=base.id, candidate=cand.id)[1]["verdict"] == "inconclusive"
    code, answer = _compare(served, baseline=base.id, candidate=cand.id, alpha="0.2")
    assert code == 200 and answer["verdict"] == "regression" and answer["metrics"][0]["alpha"] == 0.2


def test_compare_answers_bad_requests_in_the_error_shape(served: Served) -> None:
    evals = EvalStore(served.store)
    base = store_run(evals, {"contains": [1.0] * 5}, project="p1")
    cand = store_run(evals, {"contains": [1.0] * 5}, project="p1")
    elsewhere = store_run(evals, {"contains": [1.0] * 5}, project="p2")
    for params, status, code, param in (
        ({"baseline": base.id, "candidate": base.id}, 400, "same_run", "candidate"),
        (
            {"baseline": base.id, "candidate": cand.id, "margin": "contains:lots"},
            400,
            "invalid_parameter",
            "margin",
        ),
        (
            {"baseline": base.id, "candidate": cand.id, "group_by": "doc"},
            400,
            "invalid_parameter",
            "group_by",
        ),
        ({"baseline": base.id}, 400, "invalid_parameter", "candidate"),
        ({"baseline": base.id, "candidate": elsewhere.id}, 404, "eval_run_not_found", "candidate"),
        ({"baseline": base.id, "candidate": cand.id, "alpha": "0.7"}, 400, "invalid_parameter", "alpha"),
        ({"baseline": base.id, "candidate": cand.id, "alpha": "often"}, 400, "invalid_parameter", "alpha"),
        ({"baseline": base.id, "candidate": cand.id, "margin": "-1"}, 400, "invalid_parameter", "margin"),
        ({"baseline": base.id, "candidate": cand.id, "metric": "nope"}, 400, "metric_not_shared", "metric"),
        ({"baseline": base.id, "candidate": cand.id, "colour": "red"}, 400, "invalid_parameter", "colour"),
        *(
            (
                {"baseline": base.id, "candidate": cand.id, "changed_limit": v},
                400,
                "invalid_parameter",
                "changed_limit",
            )
            for v in ("\u00b2", "9" * 26, "-1")
        ),
        (
            {"baseline": base.id, "candidate": cand.id, "allow_uncalibrated": "maybe"},
            400,
            "invalid_parameter",
            "allow_uncalibrated",
        ),
    ):
        response = served.client.get("/api/evals/compare", params=params, headers=served.auth)
        assert response.status_code == status, (params, response.text)
        error = response.json()["error"]
        assert (error["code"], error["param"]) == (code, param), error
        assert error["type"] in ("invalid_request_error", "not_found_error") and error["message"]
    assert served.client.get("/api/evals/compare", params={"baseline": base.id}).status_code == 401
    for limit in ("\u00b2", "9" * 5000):
        response = served.client.get("/api/evals/runs", params={"limit": limit}, headers=served.auth)
        assert response.status_code == 400 and response.json()["error"]["param"] == "limit", response.text


def test_run_results_carry_each_scorers_details_a_page_at_a_time(served: Served, tmp_path: Path) -> None:
    """An eval run with a judge (the simulated model grading from a knowledge file): the results API
    gives each score with its scorer's details, pages with ``after``, one item with ``item``; a run
    stored before details were kept gives null details."""
    (tmp_path / "grades.jsonl").write_text(
        '{"question": "explain tides", "answer": "Score: 4\\nReason: clear.", "difficulty": 0}\n'
        '{"question": "explain gravity", "answer": "Score: 2\\nReason: vague.", "difficulty": 0}\n'
    )
    models = [
        {"name": "sim", "provider": "sim", "model": "sim-1", "options": {"echo": True}},
        {
            "name": "judge",
            "provider": "sim",
            "model": "sim-judge",
            "options": {"knowledge": str(tmp_path / "grades.jsonl")},
        },
    ]
    config = write_yaml(tmp_path / "judged.yaml", {"models": models, "router": {"retries": 0}})
    spec = explain_spec(tmp_path, 3, project="p1")
    spec["target"]["config"] = str(config)
    spec["judge"] = {"model": "judge", "config": str(config), "logprobs": False}
    spec["scorers"].append({"type": "rubric", "name": "quality", "criteria": "Is it right?"})
    run = asyncio.run(run_eval(parse_spec(spec, base_dir=tmp_path), EvalStore(served.store)))

    def results(**params: str) -> Any:
        return served.client.get(f"/api/evals/runs/{run.id[:8]}/results", params=params, headers=served.auth)

    first = results(limit="2")
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["run_id"] == run.id and [r["item_id"] for r in page["data"]] == ["1", "2"]
    tides = page["data"][0]
    assert tides["output"] == "Explain tides briefly." and tides["position"] == 1
    contains, quality = tides["scores"]
    assert contains == {
        "scorer": "contains",
        "value": 1.0,
        "passed": True,
        "error": None,
        "reason": None,
        "details": None,  # a scorer with nothing more to say
    }
    assert quality["value"] == 0.75 and quality["passed"] is True
    assert quality["details"] == {"score": 4, "weighted_score": None}
    assert page["data"][1]["scores"][1]["details"] == {"score": 2, "weighted_score": None}
    rest = results(limit="2", after=page["next_after"]).json()
    assert [r["item_id"] for r in rest["data"]] == ["3"] and rest["next_after"] is None
    unknown = rest["data"][0]["scores"][1]  # the judge did not know: unmeasured, and said so
    assert unknown["value"] is None and unknown["error"] and unknown["details"] == {"retryable": False}
    one = results(item="2").json()
    assert [(r["item_id"], r["scores"][1]["details"]["score"]) for r in one["data"]] == [("2", 2)]

    old = store_run(EvalStore(served.store), {"contains": [1.0]}, project="p1")  # no details stored
    (stored,) = served.client.get(f"/api/evals/runs/{old.id}/results", headers=served.auth).json()["data"]
    assert stored["scores"][0]["details"] is None and stored["scores"][0]["value"] == 1.0

    for param, value in (("after", "two"), ("after", "1."), ("item", "a\x00b"), ("limit", "501")):
        bad = results(**{param: value})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, (param, value)
    other = served.client.get(
        f"/api/evals/runs/{run.id}/results", headers={"Authorization": f"Bearer {served.other_key}"}
    )
    assert other.status_code == 404 and other.json()["error"]["code"] == "eval_run_not_found"
