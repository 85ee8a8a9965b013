"""A canary's status and the controller's decisions through the surfaces, in-process: ``GET
/api/prompts/{name}/canary`` (the test's figures while it runs, the decision after), the prompt page,
and ``pilothouse prompts canary-status``; bad input is a clear 400/404, another project sees nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from pilothouse.cli import cli
from pilothouse.cli.common import CliError
from pilothouse.domain.keys import Scope
from pilothouse.prompts import PromptRegistry
from tests.improve.test_canary import draws, scored_traffic
from tests.server.conftest import Served, serve
from tests.ui.conftest import login


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path, canary_score="correct", canary_min_samples=50, canary_interval_s=3600)


@pytest.mark.slow  # a login, pages, and the CLI in this process
def test_status_decision_page_and_cli(app: Served, tmp_path: Path) -> None:
    registry = PromptRegistry(app.store)
    registry.create("p1", "answer", {"prompt": "Answer: {{q}}"}, actor="test", labels=["production"])
    registry.create("p1", "answer", {"prompt": "Answer briefly: {{q}}"}, actor="test")
    registry.set_canary("p1", "answer", "production", 2, 0.5, actor="ops")
    scored_traffic(app.store, 1, draws(1, 0.9, 200))
    scored_traffic(app.store, 2, draws(2, 0.5, 200))

    running = app.client.get("/api/prompts/answer/canary", headers=app.auth)
    assert running.status_code == 200, running.text
    body = running.json()
    assert (body["running"], body["version"], body["canary_version"], body["score"]) == (
        True,
        1,
        2,
        "correct",
    )
    assert body["test"]["verdict"] == "regression" and body["test"]["canary"]["n"] == 200
    assert body["decisions"] == []

    _, admin = app.store.create_api_key("p1", "ops", frozenset({Scope.ADMIN, Scope.READ}))
    ops = {"Authorization": f"Bearer {admin}"}
    for bad_field in ({"score": 5}, {"score": ""}, {"margin": -1}, {"margin": True}):
        refused = app.client.post("/api/prompts/answer/canary", json={"version": 2, **bad_field}, headers=ops)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_prompt", bad_field
    _, reader = app.store.create_api_key("p1", "reader", frozenset({Scope.READ}))
    assert login(app.client, reader).status_code in (200, 303)
    page = app.client.get("/prompts/answer")
    assert page.status_code == 200 and "Sequential test on <code>correct</code>" in page.text
    assert "canary n=200" in page.text and ">regression</span>" in page.text

    controller = app.client.app.state.pilothouse.canaries  # type: ignore[attr-defined]
    decided = controller.evaluate(time.time_ns())
    assert [(c.canary_version, r.verdict.value) for c, r in decided] == [(2, "regression")]
    after = app.client.get("/api/prompts/answer/canary?label=production", headers=app.auth).json()
    assert after["running"] is False and after["test"] is None
    assert [(d["action"], d["version"]) for d in after["decisions"]] == [("canary-rollback", 2)]
    assert after["decisions"][0]["detail"]["control"]["n"] == 200

    assert app.client.get("/api/prompts/nothing/canary", headers=app.auth).status_code == 404
    bad = app.client.get("/api/prompts/answer/canary?label=no%20such!", headers=app.auth)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_prompt"
    other = {"Authorization": f"Bearer {app.other_key}"}
    assert app.client.get("/api/prompts/answer/canary", headers=other).status_code == 404

    page = app.client.get("/prompts/answer")
    assert (
        page.status_code == 200 and "canary rolled back" in page.text and "Sequential test" not in page.text
    )

    url = app.store.engine.url.render_as_string(hide_password=False)
    runner = CliRunner()
    shown = runner.invoke(
        cli, ["prompts", "canary-status", "answer", "--project", "p1", "--database-url", url]
    )
    assert shown.exit_code == 0, shown.output
    assert "no canary runs on production" in shown.output and "version 2 rolled back" in shown.output
    as_json = runner.invoke(
        cli, ["prompts", "canary-status", "answer", "--project", "p1", "--database-url", url, "--json"]
    )
    assert orjson.loads(as_json.output)["decisions"][0]["action"] == "canary-rollback"
    missing = runner.invoke(cli, ["prompts", "canary-status", "nothing", "--database-url", url])
    assert isinstance(missing.exception, CliError) and missing.exception.exit_code == 2
    assert "no prompt named 'nothing'" in str(missing.exception)
    for args in (
        ["canary-status", "answer", "--project", "p1", "--label", "nope"],
        ["canary", "answer", "--project", "p1", "--label", "nope", "--version", "2"],
        ["canary", "nothing", "--project", "p1", "--version", "2"],
    ):
        refused = runner.invoke(cli, ["prompts", *args, "--database-url", url])
        assert isinstance(refused.exception, CliError) and refused.exception.exit_code == 2, args
        expected = "no prompt named 'nothing'" if "nothing" in args else "has no label 'nope'"
        assert expected in str(refused.exception), (args, str(refused.exception))
