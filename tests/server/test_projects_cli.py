"""``pilothouse projects retention``: set, show and clear a project's retention on the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pilothouse.cli import cli
from pilothouse.cli.common import CliError


@pytest.mark.slow  # migrates a new SQLite file: ~0.5 s
def test_retention_is_set_shown_and_cleared(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    run = CliRunner()
    base = ["projects", "retention", "--project", "team", "--database-url", url]
    assert run.invoke(cli, [*base, "--days", "30"]).output.strip() == "team: traces kept 30 days"
    assert run.invoke(cli, base).output.strip() == "team: traces kept 30 days"
    for bad in (["--days", "0"], ["--days", "5", "--forever"]):
        error = run.invoke(cli, [*base, *bad]).exception
        assert isinstance(error, CliError) and error.exit_code == 2
    assert run.invoke(cli, [*base, "--forever"]).output.strip() == "team: traces kept for ever"
