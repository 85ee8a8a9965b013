"""``pilothouse projects``: per-project settings kept in the database (the server need not run)."""

from __future__ import annotations

import click

from pilothouse.cli.common import CliError, database_option, open_store


@click.group()
def projects() -> None:
    """Projects' settings: how long their traces are kept."""


@projects.command()
@click.option("--project", default="default", show_default=True)
@click.option(
    "--days",
    type=int,
    default=None,
    help="Delete the project's traces (spans, scores) older than this many days; rollups stay.",
)
@click.option("--forever", is_flag=True, help="Keep the project's traces for ever (the default).")
@database_option
def retention(project: str, days: int | None, forever: bool, database_url: str | None) -> None:
    """Show or set a project's retention; the server's retention job applies it (every
    retention_interval_s, in one process)."""
    from pilothouse.store.retention import RetentionStore

    if days is not None and forever:
        raise CliError("give --days or --forever, not both", exit_code=2)
    store = open_store(database_url, create=days is not None or forever)
    try:
        kept = RetentionStore(store)
        if days is not None or forever:
            try:
                kept.set_retention_days(project, None if forever else days)
            except ValueError as exc:
                raise CliError(str(exc), exit_code=2) from None
        current = kept.retention().get(project)
    finally:
        store.close()
    click.echo(f"{project}: " + (f"traces kept {current} days" if current else "traces kept for ever"))
