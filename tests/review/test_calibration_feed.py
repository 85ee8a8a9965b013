"""Reviewers' answers become judge calibration data: traces reviewed in a queue, their labels exported
with ``pilothouse review labels``, and ``pilothouse judge calibrate`` grading them with a scripted judge
(the same script and expected figures as tests/evals/test_calibration.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pilothouse.quality.review import ReviewService
from pilothouse.server import Settings, create_app
from pilothouse.store.sql import SqlStore
from tests.evals.conftest import write_jsonl, write_yaml
from tests.evals.test_calibration import SCRIPT
from tests.evals.test_cli import Cli, cli  # noqa: F401  (the fixture)
from tests.review.stored import write_trace

pytestmark = pytest.mark.slow  # a judge over twelve items, and the CLI in this process


def test_review_labels_calibrate_a_judge(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    knowledge = write_jsonl(
        tmp_path / "judge-knows.jsonl",
        [{"question": marker, "answer": reply, "difficulty": 0} for marker, (_, reply) in SCRIPT.items()],
    )
    judge = {
        "name": "judge",
        "provider": "sim",
        "model": "sim-judge",
        "options": {"knowledge": str(knowledge)},
    }
    write_yaml(tmp_path / "models.yaml", {"models": [judge], "router": {"retries": 0}})
    spec = {
        "dataset": "unused.jsonl",
        "target": {
            "model": "judge",
            "config": "models.yaml",
            "messages": [{"role": "user", "content": "Explain {{input}}."}],
        },
        "judge": {"model": "judge", "config": "models.yaml", "logprobs": False},
        "scorers": [{"type": "rubric", "name": "quality", "criteria": "Is the explanation right?"}],
    }
    write_yaml(tmp_path / "spec.yaml", spec)

    store = SqlStore.from_url(cli.url)  # the database the commands find
    assert cli("review", "configs", "create", "quality", "--kind", "boolean")[0] == 0
    assert cli("review", "queues", "create", "judged", "--config", "quality")[0] == 0
    code, _, err = cli("review", "queues", "create", "other", "--config", "nope")
    assert code == 2 and err.strip() == "Error: there is no score config 'nope' in this project"
    traces = {}
    for i, marker in enumerate(SCRIPT):
        traces[
            write_trace(store, "default", marker, f"{marker} is explained here.", name="explain", at=i)
        ] = marker
    code, out, err = cli("review", "queues", "fill", "judged", "--name", "explain", "--limit", "50")
    assert code == 0 and out.strip() == "12", err
    service = ReviewService(store)
    while (view := service.next_item("default", "judged", "rita")) is not None:
        human_label, _ = SCRIPT[traces[view.item.trace_id]]
        service.submit("default", view.item.id, "rita", {"quality": human_label})
    store.close()

    code, _, err = cli("review", "labels", "quality", "-o", "labels.jsonl")
    assert code == 0 and "12 labelled items (0 left out" in err
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert {row["input"]["input"]: row["input"]["label"] for row in rows} == {
        m: label for m, (label, _) in SCRIPT.items()
    }

    code, out, err = cli("judge", "calibrate", "spec.yaml", "--labels", "labels.jsonl", "--no-swap")
    assert code == 0, err
    # as in tests/evals/test_calibration.py: 11 measured, agreeing on 7, kappa 16/60
    assert "agreement        63.6%  (7 of 11 measured items)" in out
    assert "Cohen's kappa    0.267" in out and "stored as version 1 of judge" in out
    store = SqlStore.from_url(cli.url)
    (calibration,) = ReviewService(store).judge_calibrations("default", "quality")
    assert calibration.metrics.n == 12 and calibration.metrics.kappa == pytest.approx(16 / 60)
    ReviewService(store).add_user("default", "rita", "rita-password-1")
    with TestClient(create_app(Settings(home=tmp_path), store=store)) as client:
        page = client.get("/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        fields = {"login_token": token.group(1), "username": "rita", "password": "rita-password-1"}
        assert client.post("/login", data=fields, follow_redirects=False).status_code == 303
        shown = client.get("/review/agreement").text
    assert "Judge calibrations of scorers named quality" in shown and "kappa 0.267 [" in shown
    store.close()
