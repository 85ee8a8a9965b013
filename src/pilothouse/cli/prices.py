"""``pilothouse prices``: the price catalogue (and a config's custom prices)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from pilothouse.cli.common import CliError, database_option, open_store
from pilothouse.config import ConfigError, default_config_file, load_config
from pilothouse.costs.catalogue import PriceCatalogue, PriceRow
from pilothouse.domain.timeparse import parse_time_ns
from pilothouse.gateway.config import GatewayConfig
from pilothouse.store.costs import CostStore

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A gateway config whose custom prices (models[].price) count too "
    "(default: $PILOTHOUSE_CONFIG, else ./pilothouse.yaml when there is one).",
)


def load_catalogue(config_path: Path | None) -> PriceCatalogue:
    """The packaged catalogue with the custom prices of ``config_path`` (else of $PILOTHOUSE_CONFIG, else
    of ./pilothouse.yaml: the file ``make run`` serves)."""
    try:
        custom = GatewayConfig.from_config(load_config(config_path or default_config_file())).prices
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    return PriceCatalogue.packaged(custom)


def _rate(value: float | None) -> str:
    """A price per 1M tokens as written (a rate, not an amount: Money's format is not for it)."""
    return "-" if value is None else f"{value:g}"


@click.group()
def prices() -> None:
    """List, show and check model prices (USD per 1M tokens)."""


@prices.command("list")
@click.option("--provider", default=None, help="Only this provider (openai, anthropic, google, ...).")
@click.option("--search", default=None, help="Only models whose id contains this text.")
@click.option("--all", "show_all", is_flag=True, help="Also rows superseded by a later price.")
@config_option
def list_prices(provider: str | None, search: str | None, show_all: bool, config_path: Path | None) -> None:
    """Prices in effect today (input, cached input, cache write, output per 1M tokens)."""
    catalogue = load_catalogue(config_path)
    rows = list(catalogue)
    if not show_all:
        latest: dict[tuple[str, str], PriceRow] = {}
        for row in rows:
            key = (row.provider, row.model)
            if key not in latest or row.effective_from > latest[key].effective_from:
                latest[key] = row
        rows = list(latest.values())
    if provider:
        rows = [r for r in rows if r.provider == provider.lower()]
    if search:
        rows = [r for r in rows if search.lower() in r.model.lower()]
    rows.sort(key=lambda r: (r.provider, r.model, r.effective_from))
    click.echo(
        f"{'PROVIDER':10} {'MODEL':44} {'FROM':10} {'INPUT':>8} {'CACHED':>8} {'WRITE':>8} {'OUTPUT':>8}"
    )
    for r in rows:
        since = "config" if r.source != "catalogue" else r.effective_from.isoformat()
        click.echo(
            f"{r.provider:10} {r.model:44} {since:10} {_rate(r.input):>8} {_rate(r.cache_read):>8} "
            f"{_rate(r.cache_write):>8} {_rate(r.output):>8}"
        )
    click.echo(f"{len(rows)} rows; catalogue version {catalogue.version}", err=True)


@prices.command()
@click.argument("model")
@click.option("--provider", default=None, help="The provider, when the model id is ambiguous.")
@config_option
def show(model: str, provider: str | None, config_path: Path | None) -> None:
    """Every price row of MODEL (history included) and where it comes from."""
    catalogue = load_catalogue(config_path)
    current = catalogue.lookup(provider, model)
    if current is None:
        raise CliError(f"no price for {model!r}; 'pilothouse prices list --search ...' lists the models")
    history = [r for r in catalogue if r.provider == current.provider and r.model == current.model]
    for row in sorted(history, key=lambda r: r.effective_from):
        marker = "*" if row is current else " "
        click.echo(f"{marker} {row.version}")
        for name, value in row.as_dict().items():
            if value not in (None, [], "") and name not in ("provider", "model", "version"):
                click.echo(f"    {name:24} {value}")
    click.echo("(* = in effect now)", err=True)


@prices.command()
@click.option("--since", default="30d", show_default=True, help="Look at model calls since (15m, 7d, ISO).")
@click.option("--project", default=None, help="Only this project.")
@config_option
@database_option
def check(since: str, project: str | None, config_path: Path | None, database_url: str | None) -> None:
    """Traced models with no price (their cost is recorded as unknown); exit 1 if there are any.
    Requests the gateway refused before asking any model (an unknown model name, say) are left out."""
    from pilothouse.domain.traces import REFUSED_PRICE_VERSION

    catalogue = load_catalogue(config_path)
    try:
        since_ns = parse_time_ns(since, time.time_ns())
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None
    store = open_store(database_url)
    missing: dict[tuple[str, str], int] = {}
    priced = 0
    for call in CostStore(store).iter_model_calls(since_ns, project_id=project):
        if call.cost is not None and call.cost.price_version == REFUSED_PRICE_VERSION:
            continue
        names = [m for m in (call.deployment_model, call.model, call.request_model) if m]
        if any(catalogue.lookup(call.provider, m) for m in names):
            priced += 1
        else:
            key = (call.provider or "?", names[0] if names else "?")
            missing[key] = missing.get(key, 0) + 1
    store.close()
    if not missing:
        click.echo(f"every traced model has a price ({priced} calls checked)")
        return
    click.echo(f"{'PROVIDER':12} {'MODEL':44} CALLS")
    for (prov, model), count in sorted(missing.items(), key=lambda kv: -kv[1]):
        click.echo(f"{prov:12} {model:44} {count}")
    click.echo(
        f"{len(missing)} models without a price ({sum(missing.values())} calls); add 'price:' to their "
        "config entries, or correct the catalogue",
        err=True,
    )
    raise SystemExit(1)
