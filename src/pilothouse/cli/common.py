"""What every command group shares: the database option, settings, one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from pilothouse.server.settings import Settings
from pilothouse.store.sql import SqlStore

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """A failure reported as one line on stderr with a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def database_option(func: F) -> F:
    """``--database-url`` (else PILOTHOUSE_DATABASE_URL, else the SQLite file in PILOTHOUSE_HOME)."""
    return click.option(
        "--database-url",
        default=None,
        help="sqlite:///path or postgresql://user@host/db (default: $PILOTHOUSE_DATABASE_URL, "
        "else ./.pilothouse/pilothouse.db).",
    )(func)


def open_store(database_url: str | None) -> SqlStore:
    """The migrated store of the configured database; one-line error when it cannot be opened."""
    url = Settings.load(database_url=database_url).resolved_database_url
    try:
        return SqlStore.from_url(url)
    except (SQLAlchemyError, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0]
        raise CliError(f"cannot open database {url}: {reason}") from exc
