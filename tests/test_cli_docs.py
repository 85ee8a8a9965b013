"""docs/cli.md names every command the CLI has, in tables that render: a new command that the reference
forgets, or a `|` left unescaped inside a cell (which splits the row into more columns), fails here."""

from __future__ import annotations

import re
from pathlib import Path

import click

from pilothouse.cli import cli

CLI_MD = Path(__file__).parents[1] / "docs" / "cli.md"


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        assert command is not None
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_every_command_is_in_docs_cli_md() -> None:
    doc = CLI_MD.read_text()
    missing = []
    for path in _commands(cli):
        full = "pilothouse " + " ".join(path)
        # a row may name a sibling command short, after the group's full name: `users list`
        short = "`" + " ".join(path[-2:]) if len(path) > 1 else full
        if full not in doc and short not in doc:
            missing.append(full)
    assert not missing, f"commands docs/cli.md does not describe: {missing}"


def test_every_table_row_of_docs_cli_md_has_two_cells() -> None:
    in_table = False
    bad = []
    for number, line in enumerate(CLI_MD.read_text().splitlines(), 1):
        if not line.startswith("|"):
            in_table = False
            continue
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        if not in_table:
            in_table = True
            if cells != [" command ", " what "]:
                bad.append(f"line {number}: a table without its header row")
            continue
        if len(cells) != 2:
            bad.append(f"line {number}: {len(cells)} cells (an unescaped | inside a cell?)")
    assert not bad, bad


def test_every_database_option_says_where_the_default_database_is() -> None:
    # it said ./.pilothouse/pilothouse.db, and a user who set PILOTHOUSE_HOME (as `serve` did) was misled
    wrong = []
    for path in _commands(cli):
        command: click.Command = cli
        for name in path:
            assert isinstance(command, click.Group)
            found = command.get_command(click.Context(command), name)
            assert found is not None
            command = found
        for param in command.params:
            database = isinstance(param, click.Option) and "--database-url" in param.opts
            if database and "$PILOTHOUSE_HOME" not in (param.help or ""):
                wrong.append(" ".join(path))
    assert not wrong, f"--database-url help without $PILOTHOUSE_HOME: {wrong}"
