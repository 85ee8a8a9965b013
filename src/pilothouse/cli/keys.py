"""``pilothouse keys``: project API keys, worked on the database directly (server running or not)."""

from __future__ import annotations

import click

from pilothouse.cli.common import CliError, database_option, open_store
from pilothouse.domain.budgets import BudgetPeriod, BudgetScope
from pilothouse.domain.keys import DEFAULT_SCOPES, DuplicateKeyName, check_key_name, parse_scopes
from pilothouse.domain.money import Money
from pilothouse.domain.timeparse import iso
from pilothouse.store.costs import CostStore


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command()
@click.option("--name", required=True, help="A label for the key (who or what uses it).")
@click.option("--project", default="default", show_default=True, help="Project the key belongs to.")
@click.option(
    "--scopes",
    default=",".join(s.value for s in DEFAULT_SCOPES),
    show_default=True,
    help="Comma-separated: gateway, ingest, read, admin.",
)
@click.option("--models", default=None, help="Comma-separated models the key may call (default: all).")
@click.option(
    "--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute (default: no limit)."
)
@click.option(
    "--tpm", type=click.IntRange(min=1), default=None, help="Tokens per minute (default: no limit)."
)
@click.option(
    "--budget-usd",
    type=click.FloatRange(min=0),
    default=None,
    help="A hard spending limit for this key (see 'pilothouse budgets').",
)
@click.option(
    "--budget-period",
    type=click.Choice(["day", "week", "month", "total"]),
    default="month",
    show_default=True,
    help="The period of --budget-usd.",
)
@database_option
def create(
    name: str,
    project: str,
    scopes: str,
    models: str | None,
    rpm: int | None,
    tpm: int | None,
    budget_usd: float | None,
    budget_period: str,
    database_url: str | None,
) -> None:
    """Create a key; its secret is printed once, alone on the last line."""
    try:
        scope_set = parse_scopes(scopes)
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None
    try:
        check_key_name(name.strip())
    except ValueError as exc:
        raise CliError(f"--name: {exc}", exit_code=2) from None
    allowed = None
    if models is not None:
        allowed = frozenset(m.strip() for m in models.split(",") if m.strip())
        if not allowed:
            raise CliError("--models needs at least one model name", exit_code=2)
    store = open_store(database_url, create=True)
    try:
        key, secret = store.create_api_key(project, name.strip(), scope_set, models=allowed, rpm=rpm, tpm=tpm)
    except DuplicateKeyName as exc:
        store.close()
        raise CliError(str(exc), exit_code=1) from None
    if budget_usd is not None:
        CostStore(store).create_budget(
            project, BudgetScope.KEY, key.id, BudgetPeriod(budget_period), Money.from_usd(budget_usd)
        )
    store.close()
    click.echo(
        f"Created key {key.id} ({key.prefix}...) in project {project!r} with scopes "
        f"{','.join(sorted(scope_set))}. The secret is shown only now:",
        err=True,
    )
    click.echo(secret)


@keys.command("list")
@click.option("--project", default=None, help="Only this project's keys.")
@database_option
def list_keys(project: str | None, database_url: str | None) -> None:
    """List keys (prefixes only; secrets are never stored)."""
    store = open_store(database_url)
    rows = store.list_api_keys(project)
    store.close()
    click.echo(
        f"{'ID':32}  {'PREFIX':13}  {'PROJECT':12}  {'SCOPES':26}  {'CREATED':24}  {'LIMITS':24}  NAME"
    )
    for k in rows:
        state = "" if k.active else " (revoked)"
        scopes = ",".join(sorted(k.scopes))
        limits = ", ".join(
            part
            for part in (
                f"rpm {k.rpm}" if k.rpm else "",
                f"tpm {k.tpm}" if k.tpm else "",
                f"models {','.join(sorted(k.models))}" if k.models is not None else "",
            )
            if part
        )
        click.echo(
            f"{k.id:32}  {k.prefix + '...':13}  {k.project_id:12}  {scopes:26}  {iso(k.created_ns):24}  "
            f"{limits or '-':24}  {k.name}{state}"
        )


@keys.command()
@click.argument("key_id")
@database_option
def revoke(key_id: str, database_url: str | None) -> None:
    """Revoke a key by id (running servers notice within their key cache time, 10 s by default)."""
    store = open_store(database_url)
    done = store.revoke_api_key(key_id)
    store.close()
    if not done:
        raise CliError(f"no active key with id {key_id!r}")
    click.echo(f"revoked {key_id}")
