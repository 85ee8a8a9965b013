"""``pilothouse prompts promote``: the eval runs on the label's version and on the candidate through
the evaluations service, and the label moves only when the gate passes; the decision is in the
history either way. The model is the simulated ``echo`` model, so what a prompt says shows in the
answer: a version that drops the topic is worse, measurably."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pilothouse.cli import cli
from pilothouse.cli.common import CliError
from pilothouse.prompts import PromptRegistry
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head
from tests.server.inprocess import cli_in_process

TOPICS = [f"topic{n}" for n in range(60)]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[str, Path, Path]:
    url = sqlite_at_head(tmp_path / "promote.db")
    config = tmp_path / "models.yaml"
    config.write_text(
        yaml.safe_dump(
            {"models": [{"name": "echo", "provider": "sim", "model": "echo-1", "options": {"echo": True}}]}
        )
    )
    dataset = tmp_path / "topics.jsonl"
    dataset.write_text("".join(json.dumps({"topic": t, "expected": t}) + "\n" for t in TOPICS))
    return url, config, dataset


@pytest.mark.slow
def test_promotion_refuses_a_worse_version_and_passes_a_good_one(setup: tuple[str, Path, Path]) -> None:
    url, config, dataset = setup
    db = ["--database-url", url]
    assert (
        cli_in_process(
            "prompts",
            "create",
            "explain",
            "--text",
            "Explain {{topic}} briefly.",
            "--model",
            "echo",
            "--label",
            "production",
            *db,
        ).returncode
        == 0
    )
    assert (
        cli_in_process(
            "prompts", "create", "explain", "--text", "Explain it briefly.", "--model", "echo", *db
        ).returncode
        == 0
    )
    assert (
        cli_in_process(
            "prompts", "create", "explain", "--text", "Please explain {{topic}}.", "--model", "echo", *db
        ).returncode
        == 0
    )
    common = ["--to", "production", "--dataset", str(dataset), "--scorer", "contains", "--margin", "0.1"]
    common += ["--config", str(config), *db]

    worse = cli_in_process("prompts", "promote", "explain", "--version", "2", *common)
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "NOT PROMOTED" in worse.stdout
    store = SqlStore.from_url(url)
    try:
        registry = PromptRegistry(store)
        assert registry.get("default", "explain", label="production").version == 1
        refused = registry.history("default", "explain", 1)[0]
        assert (refused.action, refused.version, refused.detail["verdict"]) == ("refuse", 2, "regression")
        assert refused.detail["metrics"]["contains"]["delta"] == pytest.approx(-1.0)
    finally:
        store.close()

    good = cli_in_process("prompts", "promote", "explain", "--version", "3", *common)
    assert good.returncode == 0, good.stdout + good.stderr
    store = SqlStore.from_url(url)
    try:
        registry = PromptRegistry(store)
        assert registry.get("default", "explain", label="production").version == 3
        promoted = registry.history("default", "explain", 1)[0]
        assert (promoted.action, promoted.version, promoted.previous) == ("promote", 3, 1)
        assert promoted.detail["verdict"] == "pass"
    finally:
        store.close()
    history = cli_in_process("prompts", "history", "explain", *db).stdout
    assert "promoted 3 to production (was 1)" in history and "refused promoting 2" in history


def _usage_error(*args: str) -> str:
    """The one-line message of a command that fails with a usage error (exit 2)."""
    with pytest.raises(CliError) as caught:
        cli.main(list(args), standalone_mode=False)
    assert caught.value.exit_code == 2
    return str(caught.value)


@pytest.mark.slow  # a few commands, each opening the database
def test_promotion_usage_errors(setup: tuple[str, Path, Path]) -> None:
    url, _, dataset = setup
    db = ["--database-url", url]
    cli_in_process(
        "prompts",
        "create",
        "explain",
        "--text",
        "Explain {{topic}}.",
        "--model",
        "echo",
        "--label",
        "production",
        *db,
    )
    scored = ["--dataset", str(dataset), "--scorer", "contains", *db]
    assert "no version 9" in _usage_error("prompts", "promote", "explain", "--version", "9", *scored)
    assert "--scorer" in _usage_error(
        "prompts", "promote", "explain", "--version", "1", "--dataset", str(dataset), *db
    )
    assert "already points" in _usage_error("prompts", "promote", "explain", "--version", "1", *scored)
    assert "invalid label" in _usage_error("prompts", "label", "explain", "Bad Label", "1", *db)
    assert "no prompt named 'nothing'" in _usage_error(
        "prompts", "show", "nothing", "--label", "production", *db
    )
    cli_in_process(
        "prompts", "create", "explain", "--text", "Explain {{topic}} well.", "--model", "echo", *db
    )
    refused = _usage_error("prompts", "promote", "explain", "--version", "2", "--metric", "nosuch", *scored)
    assert "--metric 'nosuch' is not a metric of this eval (metrics: contains, latency_ms" in refused
    store = SqlStore.from_url(url)
    try:  # refused before either eval ran
        assert EvalStore(store).list_runs("default") == []
    finally:
        store.close()
