"""What ``pilothouse serve`` prints tells a new user how to reach it: the SDK's base URL when the port
moved, and what the CLI needs to open the same database when the options or the config file moved it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.process import ServerProcess, cli

pytestmark = pytest.mark.slow


def banner_lines(server: ServerProcess) -> list[str]:
    server.stop()
    return [line.strip() for line in server.output().splitlines()]


def test_banner_names_the_config_that_moved_the_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = tmp_path / "models.yaml"
    config.write_text(f"models:\n  - {{name: sim, provider: sim, model: sim-1}}\nserver:\n  home: {home}\n")
    url = f"sqlite:///{home / 'pilothouse.db'}"
    server = ServerProcess(url, args=["--config", str(config)])
    lines = banner_lines(server)
    assert f"export PILOTHOUSE_BASE_URL={server.base_url}" in lines, lines
    assert f"export PILOTHOUSE_CONFIG={config}" in lines, lines
    # without it the CLI looks in ./.pilothouse, and its error names the variable
    away = cli("traces", "list", env={"PILOTHOUSE_HOME": str(tmp_path / "elsewhere")})
    assert away.returncode == 1 and "PILOTHOUSE_CONFIG" in away.stderr, away.stderr
    found = cli("traces", "list", env={"PILOTHOUSE_CONFIG": str(config)})
    assert found.returncode == 0, found.stderr


def test_banner_names_the_database_url_option(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'own.db'}"
    lines = banner_lines(ServerProcess(url, env={"PILOTHOUSE_HOME": str(tmp_path / "other")}))
    assert f"export PILOTHOUSE_DATABASE_URL={url}" in lines, lines
    assert cli("traces", "list", env={"PILOTHOUSE_DATABASE_URL": url}).returncode == 0
    # the environment already names it: nothing to add
    lines = banner_lines(ServerProcess(url, env={"PILOTHOUSE_DATABASE_URL": url}))
    assert not any(line.startswith("export PILOTHOUSE_DATABASE_URL") for line in lines), lines
