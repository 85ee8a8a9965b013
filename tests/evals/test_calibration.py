"""``pilothouse judge calibrate|list`` end to end with a scripted judge (the ``sim`` model in knowledge
mode: the marker in the answer it grades picks its reply), and the gate refusing a judge metric
until its judge is calibrated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.evals.conftest import write_jsonl, write_yaml
from tests.evals.test_cli import Cli, cli  # noqa: F401  (the fixture)

# marker -> (human label, the judge's reply): 4 tp, 2 fn, 2 fp, 3 tn and one reply without a score
SCRIPT = {
    "zq01": (True, "Score: 5 Reason: right."),
    "zq02": (True, "Score: 4"),
    "zq03": (True, "Score: 5"),
    "zq04": (True, "Score: 3"),
    "zq05": (True, "Score: 1"),
    "zq06": (True, "Score: 2"),
    "zq07": (False, "Score: 4"),
    "zq08": (False, "Score: 5"),
    "zq09": (False, "Score: 1"),
    "zq10": (False, "Score: 2"),
    "zq11": (False, "Score: 1"),
    "zq12": (False, "Hmm, hard to say."),
}


def _setup(tmp_path: Path) -> dict[str, Any]:
    knowledge = write_jsonl(
        tmp_path / "judge-knows.jsonl",
        [{"question": marker, "answer": reply, "difficulty": 0} for marker, (_, reply) in SCRIPT.items()],
    )
    write_yaml(
        tmp_path / "models.yaml",
        {
            "models": [
                {"name": "sim", "provider": "sim", "model": "sim-1", "options": {"echo": True}},
                {
                    "name": "judge",
                    "provider": "sim",
                    "model": "sim-judge",
                    "options": {"knowledge": str(knowledge)},
                },
            ],
            "router": {"retries": 0},
        },
    )
    write_jsonl(tmp_path / "items.jsonl", [{"topic": marker} for marker in SCRIPT])
    write_jsonl(
        tmp_path / "labels.jsonl",
        [
            {"id": marker, "topic": marker, "output": f"{marker} is explained here.", "label": label}
            for marker, (label, _) in SCRIPT.items()
        ],
    )
    spec = {
        "dataset": "items.jsonl",
        "target": {
            "model": "sim",
            "config": "models.yaml",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Explain {{topic}} briefly."}],
        },
        "judge": {"model": "judge", "config": "models.yaml", "logprobs": False},
        "scorers": [
            {"type": "contains", "value": "{{topic}}"},
            {"type": "rubric", "name": "quality", "criteria": "Is the explanation right?"},
        ],
    }
    write_yaml(tmp_path / "spec.yaml", spec)
    return spec


def test_calibrate_then_gate(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    spec = _setup(tmp_path)
    runs = []
    for _ in range(2):
        code, out, err = cli("eval", "run", "-q", "spec.yaml")
        assert code == 0, err
        runs.append(out.strip().splitlines()[-1])
    # identical answers on 12 items rule out a loss of half the scale, not of 2 points
    gate = ("gate", "--baseline", runs[0], "--candidate", runs[1], "--report-dir", "reports")
    gate += ("--margin", "0.5")

    code, _, err = cli(*gate)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "metric 'quality' is graded by a judge (rubric, model judge) with no calibration" in err
    assert "pilothouse judge calibrate SPEC.yaml --labels LABELS.jsonl --scorer quality" in err

    code, out, err = cli(*gate, "--allow-uncalibrated")
    assert code == 0, out + err
    assert "judge: uncalibrated" in out
    report = json.loads((tmp_path / "reports" / "gate.json").read_text())
    judges = {m["metric"]: m.get("judge") for m in report["metrics"]}
    assert judges == {"contains": None, "quality": {"calibrated": False}}

    code, out, err = cli("judge", "calibrate", "spec.yaml", "--labels", "labels.jsonl", "--no-swap")
    assert code == 0, err
    lines = out.strip().splitlines()
    first_id = lines[-1]
    assert len(first_id) == 32 and first_id.isalnum()
    # 11 measured: agree on 7; chance 61/121; kappa (77 - 61) / (121 - 61) = 16/60
    assert "agreement        63.6%  (7 of 11 measured items)" in out
    assert "Cohen's kappa    0.267  (95% CI" in out and "fair; 0 is chance, 1 perfect" in out
    assert "TPR              66.7%  (the judge passes 4 of 6 items people pass)" in out
    assert "TNR              60.0%  (the judge fails 3 of 5 items people fail)" in out
    assert "unmeasured           1" in out and "e.g. could not find a score in the judge's reply: 'Hmm" in out
    assert "not applicable: rubric judges one answer at a time" in out
    assert "stored as version 1 of judge" in out

    code, out, err = cli(*gate)
    assert code == 0, out + err
    assert "judge: kappa 0.27" in out and "TPR 66.7%, TNR 60.0%" in out and "(calibration v1, n 12)" in out
    markdown = (tmp_path / "reports" / "gate.md").read_text()
    assert "| Judge calibration |" in markdown and "kappa 0.27" in markdown
    quality = json.loads((tmp_path / "reports" / "gate.json").read_text())["metrics"][1]
    assert quality["judge"]["calibrated"] is True
    assert quality["judge"]["calibration"]["id"] == first_id
    assert quality["judge"]["calibration"]["tpr"] == pytest.approx(4 / 6)

    code, _, err = cli(*gate, "--min-kappa", "0.5")
    assert code == 2 and "kappa 0.267, below --min-kappa 0.5" in err

    # renaming the metric or moving its threshold keeps the calibration; a new version is a new row
    renamed = {**spec, "scorers": [{**spec["scorers"][1], "name": "judged", "threshold": 0.75}]}
    write_yaml(tmp_path / "renamed.yaml", renamed)
    code, out, err = cli("judge", "calibrate", "renamed.yaml", "--labels", "labels.jsonl", "-q")
    assert code == 0 and "stored as version 2 of judge" in out and err == ""
    assert "TPR              50.0%" in out  # only the 5s and 4s pass at 0.75
    code, out, _ = cli("judge", "list", "--json")
    listed = [json.loads(line) for line in out.strip().splitlines()]
    assert [c["version"] for c in listed] == [2, 1] and listed[1]["id"] == first_id
    assert listed[0]["fingerprint"] == listed[1]["fingerprint"] and listed[0]["metrics"]["unmeasured"] == 1
    assert listed[0]["judge_endpoint"].startswith("in-process: sim/sim-judge")
    code, out, _ = cli("judge", "list")
    assert code == 0 and first_id in out and "quality (rubric)" in out


def test_a_calibration_that_read_no_verdict_does_not_count(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    spec = _setup(tmp_path)
    spec["judge"] = {"model": "sim", "config": "models.yaml", "logprobs": False}  # echoes: never a score
    write_yaml(tmp_path / "spec.yaml", spec)
    runs = [cli("eval", "run", "-q", "spec.yaml")[1].strip().splitlines()[-1] for _ in range(2)]
    code, out, _ = cli("judge", "calibrate", "spec.yaml", "--labels", "labels.jsonl", "--scorer", "quality")
    assert code == 0 and "unmeasured          12" in out and "Cohen's kappa      n/a  (undefined" in out
    gate = ("gate", "--baseline", runs[0], "--candidate", runs[1])
    code, _, err = cli(*gate)
    assert code == 2 and "could read none of the judge's 12 replies" in err
    code, out, _ = cli(*gate, "--allow-uncalibrated")
    assert (
        code == 3 and "judge: kappa n/a, TPR n/a, TNR n/a (calibration v1, n 12)" in out
    )  # no value to gate


@pytest.mark.parametrize(
    ("spec", "labels", "message"),
    [
        (
            {"scorers": [{"type": "contains", "value": "x"}]},
            [{"output": "x", "label": True}],
            "has no model-graded scorer",
        ),
        (
            {
                "judge": {"model": "judge", "config": "models.yaml"},
                "scorers": [{"type": "rubric", "criteria": "ok?"}, {"type": "answer-relevance"}],
            },
            [{"output": "x", "label": True}],
            "has 2 judge scorers (rubric, answer-relevance): pick one with --scorer",
        ),
        (
            {
                "judge": {"model": "judge", "config": "models.yaml"},
                "scorers": [{"type": "rubric", "criteria": "?"}],
            },
            [{"output": "x", "label": 3}],
            "labels item '1': the label 3 is a score: give --label-threshold",
        ),
        (
            {"judge": {"model": "judge", "config": "models.yaml"}, "scorers": [{"type": "rubric"}]},
            [{"output": "x", "label": True}],
            "option 'criteria' is required",
        ),
    ],
)
def test_calibrate_usage_errors(
    cli: Cli,  # noqa: F811
    tmp_path: Path,
    spec: dict[str, Any],
    labels: list[dict[str, Any]],
    message: str,
) -> None:
    _setup(tmp_path)
    write_yaml(tmp_path / "bad.yaml", spec)
    write_jsonl(tmp_path / "bad-labels.jsonl", labels)
    code, out, err = cli("judge", "calibrate", "bad.yaml", "--labels", "bad-labels.jsonl")
    assert code == 2 and message in err and "Traceback" not in err and out == ""
