"""The four entry points of the quality gate give the same verdict on the same stored runs: ``pilothouse
gate`` (its exit code), ``GET /api/evals/compare``, the UI's compare page (both in-process over ASGI)
and the pytest plugin's ``EvalReport.assert_no_regression``. A refusal (the gate's exit 2: an
uncalibrated or weak judge, a metric not in both runs, a bad setting) is a refusal everywhere."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pilothouse.evals import ComparisonError
from pilothouse.pytest_plugin import EvalReport
from pilothouse.store.evals import EvalStore
from tests.evals.stored import JUDGED_SPEC, calibrate, judged_spec, store_run
from tests.evals.test_cli import Cli
from tests.server.conftest import Served, serve
from tests.ui.conftest import login

REFUSED = "refused"
Options = dict[str, Any]  # metric, margin, alpha, allow_uncalibrated, min_kappa


@dataclass
class Gates:
    """The stored runs, and one way to ask each entry point for its verdict."""

    served: Served
    url: str
    cli: Cli
    report_dir: Path
    runs: dict[str, str] = field(default_factory=dict)

    def by_cli(self, baseline: str, candidate: str, options: Options) -> str:
        args = [
            "gate",
            "--baseline",
            baseline,
            "--candidate",
            candidate,
            "--report-dir",
            str(self.report_dir),
        ]
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is not None and value is not False:
                args += [flag, str(value)]
        code, _, err = self.cli(*args)
        assert code != 2 or err.strip(), "a refusal says why"
        return {0: "pass", 1: "regression", 3: "inconclusive", 2: REFUSED}[code]

    def by_api(self, baseline: str, candidate: str, options: Options) -> str:
        params = {"baseline": baseline, "candidate": candidate, **_query(options)}
        response = self.served.client.get("/api/evals/compare", params=params, headers=self.served.auth)
        if response.status_code == 400:
            assert response.json()["error"]["message"]
            return REFUSED
        assert response.status_code == 200, response.text
        return str(response.json()["verdict"])

    def by_ui(self, baseline: str, candidate: str, options: Options) -> str:
        params = {"baseline": baseline, "candidate": candidate, **_query(options)}
        if options.get("allow_uncalibrated"):
            params["allow_uncalibrated"] = "1"  # what the page's checkbox sends
        response = self.served.client.get("/evals/compare", params=params)
        if response.status_code == 400:
            assert 'id="gate-refusal"' in response.text, response.text
            return REFUSED
        assert response.status_code == 200, response.text
        found = re.search(r'id="verdict-h">Gate verdict: <span class="badge \w+">(\w+)</span>', response.text)
        assert found, response.text
        return found.group(1).lower()

    def by_plugin(self, baseline: str, candidate: str, options: Options) -> str:
        evals = EvalStore(self.served.store)
        run = evals.get_run(candidate)
        assert run is not None
        report = EvalReport(run, evals, options.get("alpha", 0.05), inconclusive="fail")
        try:
            report.assert_no_regression(
                baseline,
                options.get("metric"),
                margin=options.get("margin"),
                allow_uncalibrated=bool(options.get("allow_uncalibrated")),
                min_kappa=options.get("min_kappa"),
            )
        except ComparisonError:
            return REFUSED
        except AssertionError as failure:
            verdict = str(failure).split(":", 1)[0]
            assert verdict in ("regression", "inconclusive"), failure
            return verdict
        return "pass"


def _query(options: Options) -> dict[str, str]:
    return {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in options.items()
        if value is not None
    }


@dataclass
class Stored:
    """The app over one store (module scope: the runs are written once) and the runs in it."""

    served: Served
    url: str
    runs: dict[str, str]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    tmp_path = tmp_path_factory.mktemp("gates")
    serving = serve(tmp_path)
    served = next(serving)
    evals = EvalStore(served.store)
    runs = {}
    # each candidate of "base" is its own configuration (spec), so each is the first look of its pair
    for name, scores, spec in (
        ("base", {"contains": [1.0] * 100}, None),
        ("worse", {"contains": [1.0] * 70 + [0.0] * 30}, {"variant": "worse"}),
        ("slightly", {"contains": [1.0] * 98 + [0.0] * 2}, {"variant": "slightly"}),
        ("better", {"contains": [1.0] * 100}, {"variant": "better"}),
        # other settings on the same runs would be another look: a copy is asked with other settings
        ("better-again", {"contains": [1.0] * 100}, {"variant": "better-again"}),
        ("other-metric", {"exact": [1.0] * 100}, {"variant": "other"}),
        ("broken-49", {"contains": [1.0] + [None] * 99}, {"variant": "broken-49"}),
        ("broken-all", {"contains": [None] * 100}, {"variant": "broken-all"}),
        ("fewer-metrics", {"contains": [1.0] * 100}, {"variant": "fewer"}),
        ("two-metrics", {"contains": [1.0] * 100, "exact": [1.0] * 100}, None),
        ("judged-base", {"contains": [1.0] * 100, "quality": [1.0] * 100}, JUDGED_SPEC),
        ("judged-cand", {"contains": [1.0] * 100, "quality": [1.0] * 70 + [0.0] * 30}, JUDGED_SPEC),
        ("calibrated-base", {"quality": [1.0] * 100}, judged_spec("judge-2")),
        ("calibrated-cand", {"quality": [1.0] * 98 + [0.0] * 2}, judged_spec("judge-2")),
        ("calibrated-again", {"quality": [1.0] * 98 + [0.0] * 2}, {**judged_spec("judge-2"), "v": 2}),
    ):
        runs[name] = store_run(evals, scores, project="p1", spec=spec).id
    for name, values, spec in (
        ("base-20", [1.0] * 20, None),
        ("three-worse", [1.0] * 17 + [0.0] * 3, {"variant": "three"}),
        ("three-again", [1.0] * 17 + [0.0] * 3, {"variant": "three-again"}),
        ("four-worse-1", [1.0] * 16 + [0.0] * 4, {"variant": "four"}),  # mid-p 0.031: look 1 regression
        ("four-worse-2", [1.0] * 16 + [0.0] * 4, {"variant": "four"}),  # the same candidate re-run
    ):
        runs[name] = store_run(evals, {"contains": values}, project="p1", dataset="twenty", spec=spec).id
    runs["elsewhere"] = store_run(evals, {"contains": [1.0] * 100}, project="p1", prefix="x").id
    calibrate(evals, judged_spec("judge-2"), "quality", project="p1", kappa=0.45)
    logged_in = login(served.client, served.key)  # the UI's session cookie, as a browser gets it
    assert [r.status_code for r in logged_in.history] == [303], logged_in.text
    yield Stored(served, f"sqlite:///{tmp_path / 'api.db'}", runs)  # the file serve() opened
    serving.close()


@pytest.fixture
def gates(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Gates:
    return Gates(
        stored.served, stored.url, Cli(stored.url, capsys, monkeypatch), tmp_path / "reports", stored.runs
    )


# (baseline, candidate, options, the verdict): each scenario is asked of all four entry points
SCENARIOS: list[tuple[str, str, Options, str]] = [
    ("base", "better", {}, "inconclusive"),  # identical on 100 items: too few to rule out 2 points
    ("base", "better-again", {"margin": 0.05}, "pass"),  # ... but enough to rule out 5
    ("base", "slightly", {"margin": 0.1}, "pass"),
    ("base", "slightly", {"margin": "contains=0.1"}, "pass"),
    ("base", "worse", {}, "regression"),
    ("base", "slightly", {}, "inconclusive"),
    ("base", "broken-49", {"margin": 0.1}, "inconclusive"),  # 99 unmeasured items cannot buy a pass
    ("base", "broken-all", {"margin": 0.1}, "regression"),  # nothing measured: a broken candidate
    ("base", "base", {}, REFUSED),  # a run compared with itself
    ("base", "elsewhere", {}, REFUSED),  # no item in common
    ("two-metrics", "fewer-metrics", {}, REFUSED),  # the candidate dropped a metric of the baseline
    ("two-metrics", "fewer-metrics", {"metric": "contains", "margin": 0.05}, "pass"),
    ("base-20", "three-worse", {}, "inconclusive"),  # mid-p McNemar p 0.0625
    ("base-20", "three-again", {"alpha": 0.2}, "regression"),  # ... below this alpha's first look
    ("base", "worse", {"metric": "nope"}, REFUSED),
    ("base", "other-metric", {}, REFUSED),
    ("base", "worse", {"alpha": 0.7}, REFUSED),
    ("judged-base", "judged-cand", {}, REFUSED),  # the judge of 'quality' is not calibrated
    ("judged-base", "judged-cand", {"metric": "quality"}, REFUSED),
    ("judged-base", "judged-cand", {"metric": "contains", "margin": 0.05}, "pass"),
    ("judged-base", "judged-cand", {"allow_uncalibrated": True}, "regression"),
    ("calibrated-base", "calibrated-cand", {}, "inconclusive"),
    ("calibrated-base", "calibrated-again", {"margin": 0.1, "min_kappa": 0.4}, "pass"),
    ("calibrated-base", "calibrated-cand", {"min_kappa": 0.5}, REFUSED),  # its kappa is 0.45
]


@pytest.mark.parametrize(("baseline", "candidate", "options", "verdict"), SCENARIOS)
def test_the_four_entry_points_agree(
    gates: Gates, baseline: str, candidate: str, options: Options, verdict: str
) -> None:
    base, cand = gates.runs[baseline], gates.runs[candidate]
    asked: dict[str, Callable[[str, str, Options], str]] = {
        "pilothouse gate": gates.by_cli,
        "GET /api/evals/compare": gates.by_api,
        "the UI's compare page": gates.by_ui,
        "the pytest plugin": gates.by_plugin,
    }
    answers = {name: ask(base, cand, options) for name, ask in asked.items()}
    assert answers == dict.fromkeys(asked, verdict)


def test_a_second_look_spends_less_alpha_everywhere(gates: Gates) -> None:
    """The same candidate configuration run again is the pair's second look: every entry point
    decides at its alpha (0.0025), though only the gate and the plugin record a look."""
    base, first, second = (gates.runs[k] for k in ("base-20", "four-worse-1", "four-worse-2"))
    assert gates.by_api(base, second, {}) == "regression"  # no look recorded yet: this would be look 1
    assert gates.by_cli(base, first, {}) == "regression"  # look 1 at alpha 0.045 (mid-p 0.031)
    assert gates.by_cli(base, first, {}) == "regression"  # the same two runs: the same look
    asked = (gates.by_api, gates.by_ui, gates.by_plugin, gates.by_cli)
    assert [ask(base, second, {}) for ask in asked] == ["inconclusive"] * 4  # look 2
    report = (gates.report_dir / "gate.md").read_text()
    assert "Look 2 of this baseline and candidate configuration: it spends alpha 0.0025 of 0.05" in report
    assert gates.by_cli(base, first, {}) == "regression"  # look 1 stays look 1


def test_the_api_gives_the_gates_report(gates: Gates) -> None:
    """The API's metrics are the gate's JSON report's, number for number."""
    import json

    base, cand = gates.runs["judged-base"], gates.runs["judged-cand"]
    assert gates.by_cli(base, cand, {"allow_uncalibrated": True}) == "regression"
    report = json.loads((gates.report_dir / "gate.json").read_text())
    params = {"baseline": base, "candidate": cand, "allow_uncalibrated": "true"}
    answer = gates.served.client.get("/api/evals/compare", params=params, headers=gates.served.auth).json()
    assert {k: answer[k] for k in report if k != "metrics"} == {
        k: v for k, v in report.items() if k != "metrics"
    }
