"""``serve --workers N`` refuses what it cannot run correctly, with a one-line error and exit status 2,
before it opens a database or a port."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pilothouse.cli import cli
from pilothouse.cli.common import CliError

PG = ["--database-url", "postgresql://nobody@127.0.0.1:1/none"]  # never reached: refused before


@pytest.mark.parametrize(
    ("args", "redis", "message"),
    [
        (["--workers", "2"], False, "--workers above 1 needs Redis"),  # SQLite
        (["--workers", "2", *PG], False, "--workers above 1 needs Redis"),
        (["--workers", "3", "--durable", *PG], True, "--durable keeps one spool folder"),
        (["--workers", "0"], False, "Invalid value for '--workers'"),
    ],
)
def test_refused_worker_counts(tmp_path: Path, args: list[str], redis: bool, message: str) -> None:
    env = {"PILOTHOUSE_HOME": str(tmp_path), "PILOTHOUSE_REDIS_URL": "redis://127.0.0.1:1/0" if redis else ""}
    result = CliRunner().invoke(cli, ["serve", *args], env=env)
    error = result.exception  # the console entry point prints it as "Error: ..." and exits with its code
    if isinstance(error, CliError):
        assert error.exit_code == 2 and message in str(error)
    else:
        assert result.exit_code == 2 and message in result.output  # click's own usage error
    assert not (tmp_path / "pilothouse.db").exists()  # refused before the store was opened
