"""Bad input to the prompts commands: one line on stderr and exit 2, nothing written, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilothouse.cli import cli
from pilothouse.cli.common import CliError
from tests.conftest import sqlite_at_head
from tests.server.inprocess import cli_in_process


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    return ["--database-url", sqlite_at_head(tmp_path / "prompts.db")]


def _usage_error(*args: str) -> str:
    """The one-line message of a command that fails with a usage error (exit 2)."""
    with pytest.raises(CliError) as caught:
        cli.main(list(args), standalone_mode=False)
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_files_are_refused_past_their_limit_without_being_read_whole(db: list[str]) -> None:
    # /dev/zero's stat size is 0: the whole "file" (20 GB) was read before this error
    refused = _usage_error("prompts", "create", "zeros", "--file", "/dev/zero", *db)
    assert refused == "/dev/zero: larger than 512 KiB: is this a prompt version?"
    cli_in_process(
        "prompts", "create", "explain", "--text", "Explain {{topic}}.", "--label", "production", *db
    )
    refused = _usage_error("prompts", "promote", "explain", "--version", "1", "--spec", "/dev/zero", *db)
    assert refused == "/dev/zero: larger than 1024 KiB: is this an eval spec?"


def test_a_label_moved_where_it_points_changes_nothing(db: list[str]) -> None:
    for text in ("Old {{topic}}.", "New {{topic}}."):
        cli_in_process("prompts", "create", "explain", "--text", text, "--label", "production", *db)
    cli_in_process("prompts", "label", "explain", "production", "1", *db)
    started = cli_in_process("prompts", "canary", "explain", "--version", "2", *db)
    assert started.returncode == 0, started.stderr
    before = cli_in_process("prompts", "history", "explain", *db).stdout
    same = cli_in_process("prompts", "label", "explain", "production", "1", *db)
    assert same.returncode == 0
    assert same.stdout.strip() == "explain: production already points at version 1; nothing changed"
    assert cli_in_process("prompts", "history", "explain", *db).stdout == before  # no entry
    status = cli_in_process("prompts", "canary-status", "explain", "--json", *db)
    assert '"canary_version": 2' in status.stdout, status.stdout  # the canary goes on


def test_promote_refuses_a_label_that_does_not_exist(db: list[str]) -> None:
    cli_in_process(
        "prompts", "create", "explain", "--text", "Explain {{topic}}.", "--label", "production", *db
    )
    cli_in_process("prompts", "create", "explain", "--text", "Explain {{topic}} well.", *db)
    refused = _usage_error(
        "prompts", "promote", "explain", "--version", "2", "--to", "prodution", "--dataset", "x.jsonl",
        "--scorer", "contains", *db,
    )  # fmt: skip
    assert "no label 'prodution'" in refused
    assert "pilothouse prompts label explain prodution 2" in refused
    history = cli_in_process("prompts", "history", "explain", *db).stdout
    assert "prodution" not in history


def test_parameters_are_checked_when_stored_and_canary_mistakes_refused(
    db: list[str], tmp_path: Path
) -> None:
    version = tmp_path / "v.yaml"
    for parameters, words in [
        ("{temperature: .nan}", "'temperature' holds a number that is not finite"),  # was stored as null
        ("{max_tokens: -5}", "'max_tokens' must be an integer from 1"),
        ("{bogus_param: 1}", "Unrecognized request argument supplied: bogus_param"),
    ]:
        version.write_text(f"prompt: 'Explain {{{{topic}}}}.'\nparameters: {parameters}\n")
        assert words in _usage_error("prompts", "create", "explain", "--file", str(version), *db)
    for text in ("Old {{topic}}.", "New {{topic}}."):
        cli_in_process("prompts", "create", "explain", "--text", text, "--label", "production", *db)
    cli_in_process("prompts", "label", "explain", "production", "1", *db)
    before = cli_in_process("prompts", "history", "explain", *db).stdout
    assert "no canary is running" in _usage_error("prompts", "canary", "explain", "--stop", *db)
    tiny = cli_in_process("prompts", "canary", "explain", "--version", "2", "--share", "1e-300", *db)
    assert tiny.returncode == 2 and "0.001" in tiny.stderr
    assert cli_in_process("prompts", "history", "explain", *db).stdout == before  # nothing written
    small = cli_in_process("prompts", "canary", "explain", "--version", "2", "--share", "0.001", *db)
    assert small.returncode == 0 and "0.1% of production traffic -> version 2" in small.stdout
    assert "no prompt named 'nosuch'" in _usage_error("prompts", "history", "nosuch", *db)
