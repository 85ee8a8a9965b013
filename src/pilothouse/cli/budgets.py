"""``pilothouse budgets``: spending limits per project, key, end user or tag (database directly)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from pilothouse.cli.common import CliError, database_option, open_store
from pilothouse.config import ConfigError, load_settings
from pilothouse.domain.budgets import (
    BudgetPeriod,
    BudgetScope,
    budget_target_problem,
    parse_thresholds,
    period_start,
)
from pilothouse.domain.money import Money
from pilothouse.domain.webhooks import WebhookRefused
from pilothouse.gateway.webhooks import resolve_webhook_sync
from pilothouse.store.costs import CostStore

PERIODS = [p.value for p in BudgetPeriod]


@click.group()
def budgets() -> None:
    """Create, list and delete budgets (hard: requests that could overspend get 429 budget_exceeded)."""


@budgets.command()
@click.option(
    "--scope", type=click.Choice([s.value for s in BudgetScope]), default="project", show_default=True
)
@click.option("--value", "scope_value", default="", help="The key id, user id or tag the budget limits.")
@click.option("--limit-usd", type=click.FloatRange(min=0), required=True, help="The limit in USD.")
@click.option("--period", type=click.Choice(PERIODS), default="month", show_default=True)
@click.option("--soft", is_flag=True, help="Alert only; never reject requests.")
@click.option(
    "--alerts", default="50,80,100", show_default=True, help="Alert thresholds, percent of the limit."
)
@click.option("--webhook", default=None, help="POST a JSON alert here when a threshold is crossed.")
@click.option("--project", default="default", show_default=True)
@database_option
def create(
    scope: str,
    scope_value: str,
    limit_usd: float,
    period: str,
    soft: bool,
    alerts: str,
    webhook: str | None,
    project: str,
    database_url: str | None,
) -> None:
    """Create a budget; its id is printed alone on the last line."""
    kind = BudgetScope(scope)
    if kind is not BudgetScope.KEY and (problem := budget_target_problem(kind, scope_value.strip())):
        raise CliError(f"{problem} (--value)", exit_code=2)
    try:
        thresholds = parse_thresholds(alerts)
    except ValueError as exc:
        raise CliError(f"--alerts: {exc}", exit_code=2) from None
    if webhook is not None:
        try:  # where alerts may go: public addresses, or those the webhook_allow setting names
            resolve_webhook_sync(webhook, load_settings(database_url=database_url).webhook_allow)
        except WebhookRefused as exc:
            raise CliError(f"--webhook is refused: {exc}", exit_code=2) from None
        except ConfigError as exc:
            raise CliError(f"invalid settings: {exc}", exit_code=2) from None
    store = open_store(database_url)
    if kind is BudgetScope.KEY:
        keys = [(key.id, key.active) for key in store.list_api_keys(project)]
        if problem := budget_target_problem(kind, scope_value.strip(), keys):
            store.close()
            raise CliError(f"{problem} (--value)", exit_code=2)
    budget = CostStore(store).create_budget(
        project,
        kind,
        scope_value.strip(),
        BudgetPeriod(period),
        Money.from_usd(limit_usd),
        hard=not soft,
        alert_thresholds=thresholds,
        webhook_url=webhook,
    )
    store.close()
    click.echo(
        f"Created {'soft' if soft else 'hard'} budget: {budget.label} in project {project!r}", err=True
    )
    click.echo(budget.id)


@budgets.command("list")
@click.option("--project", default=None, help="Only this project's budgets.")
@database_option
def list_budgets(project: str | None, database_url: str | None) -> None:
    """Budgets with what they have spent this period (from stored traces)."""
    store = open_store(database_url)
    costs = CostStore(store)
    now = datetime.now(UTC)
    found = costs.list_budgets(project)
    width = max([len("BUDGET"), *(len(b.label) for b in found)])  # labels hold whole key ids: no cut
    click.echo(f"{'ID':32}  {'PROJECT':12}  {'BUDGET':{width}}  {'MODE':4}  {'SPENT':>14}  USED")
    for b in found:
        spent = costs.spend_since(b, int(period_start(b.period, now).timestamp() * 1e9))
        used = f"{spent.ratio(b.limit_usd):.0%}" if b.limit_usd else "-"
        mode = "hard" if b.hard else "soft"
        shown = spent.display()
        click.echo(f"{b.id:32}  {b.project_id:12}  {b.label:{width}}  {mode:4}  {shown:>14}  {used}")
    store.close()


@budgets.command()
@click.argument("budget_id")
@click.option("--project", default=None, help="Only delete it if it belongs to this project.")
@database_option
def delete(budget_id: str, project: str | None, database_url: str | None) -> None:
    """Delete a budget (running gateways stop enforcing it within 10 s)."""
    store = open_store(database_url)
    deleted = CostStore(store).delete_budget(budget_id, project)
    store.close()
    if not deleted:
        raise CliError(f"no budget {budget_id!r}")
    click.echo(f"Deleted budget {budget_id} at {time.strftime('%Y-%m-%d %H:%M:%S')}")
