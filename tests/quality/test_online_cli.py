"""``pilothouse evaluators`` in this process over a real SQLite database: create from a file, list,
edit (a version), pause, backfill, show, delete, and one-line errors with exit 2 for bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pilothouse.cli import cli
from pilothouse.cli.common import CliError
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head
from tests.quality.online_traces import store_trace


def cli_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``pilothouse ARGS`` in this process, its errors answered as ``pilothouse.cli.main`` answers them."""
    result = CliRunner().invoke(cli, list(args))
    if isinstance(result.exception, CliError):
        error = result.exception
        return subprocess.CompletedProcess(list(args), error.exit_code, result.stdout, f"Error: {error}")
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


pytestmark = pytest.mark.slow  # a dozen commands, each opening the database


def test_the_evaluators_commands(tmp_path: Path) -> None:
    url = sqlite_at_head(tmp_path / "cli.db")
    store = SqlStore.from_url(url)
    trace = store_trace(store)
    rules = tmp_path / "rules.yaml"
    rules.write_text("scorer: {type: contains, value: Paris}\nsampling: 0.5\nfilters: {tags: [prod]}\n")
    db = ["--database-url", url]

    created = cli_in_process("evaluators", "create", "paris", "--file", str(rules), *db)
    assert created.returncode == 0 and created.stdout.strip() == "created paris v1"
    again = cli_in_process("evaluators", "create", "paris", "--file", str(rules), *db)
    assert again.returncode == 2 and "exists" in again.stderr
    listed = cli_in_process("evaluators", "list", *db).stdout.splitlines()
    assert listed[1].split()[:5] == ["paris", "1", "enabled", "contains", "50.00%"]

    rules.write_text("scorer: {type: contains, value: Paris}\nsampling: 1\n")
    assert cli_in_process(
        "evaluators", "update", "paris", "--file", str(rules), "--disable", *db
    ).stdout.strip() == ("paris is v2, paused")
    filled = cli_in_process("evaluators", "backfill", "paris", "--since", "1h", *db)
    assert filled.returncode == 0 and "looked at 1 traces" in filled.stdout and "queued 1" in filled.stdout
    shown = json.loads(cli_in_process("evaluators", "show", "paris", *db).stdout)
    assert shown["version"] == 2 and shown["items"][0]["trace_id"] == trace
    assert shown["items"][0]["state"] == "pending"  # the server's worker scores it

    rules.write_text("scorer: {type: contains, value: Paris}\nsampling: 7\n")
    bad = cli_in_process("evaluators", "update", "paris", "--file", str(rules), *db)
    assert bad.returncode == 2 and "'sampling' must be between 0 and 1" in bad.stderr
    assert cli_in_process("evaluators", "backfill", "paris", "--since", "soon", *db).returncode == 2
    assert cli_in_process("evaluators", "delete", "paris", *db).stdout.strip() == "deleted paris"
    missing = cli_in_process("evaluators", "show", "paris", *db)
    assert missing.returncode == 1 and "no evaluator named 'paris'" in missing.stderr
    store.close()


def test_traces_list_refuses_a_search_without_a_word_in_one_line(tmp_path: Path) -> None:
    url = sqlite_at_head(tmp_path / "cli.db")
    for text in ("*", " ".join(["w"] * 17)):
        refused = cli_in_process("traces", "list", "-q", text, "--database-url", url)
        assert refused.returncode == 2 and refused.stderr.startswith("Error: search text"), refused
    found = cli_in_process("traces", "list", "-q", "paris*", "--database-url", url)
    assert found.returncode == 0, found
