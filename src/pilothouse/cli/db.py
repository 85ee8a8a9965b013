"""``pilothouse db``: database maintenance."""

from __future__ import annotations

import click

from pilothouse.cli.common import database_option, open_store


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@database_option
def upgrade(database_url: str | None) -> None:
    """Apply pending schema migrations (serve does this at start-up too)."""
    store = open_store(database_url, create=True)
    click.echo(f"database is up to date ({store.engine.url.render_as_string(hide_password=True)})")
    store.close()
