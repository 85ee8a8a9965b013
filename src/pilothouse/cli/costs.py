"""``pilothouse costs``: spend reports and re-pricing after a price correction."""

from __future__ import annotations

import asyncio
import csv
import sys
import time
from pathlib import Path
from typing import Any

import click

from pilothouse.cli.common import CliError, database_option, open_store
from pilothouse.cli.prices import config_option, load_catalogue
from pilothouse.costs.cascade_report import CascadeItem
from pilothouse.costs.catalogue import PriceCatalogue
from pilothouse.costs.pricing import GATEWAY_CACHE, Pricer, price_usage
from pilothouse.costs.reports import REPORT_DIMENSIONS, cost_report
from pilothouse.domain.money import Money
from pilothouse.domain.spreadsheet import escape_formula
from pilothouse.domain.timeparse import parse_time_ns
from pilothouse.domain.traces import Cost
from pilothouse.store.costs import CostStore, StoredCall


def _since(text: str) -> int:
    try:
        return parse_time_ns(text, time.time_ns())
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None


@click.group()
def costs() -> None:
    """Spend reports and re-pricing."""


@costs.command()
@click.option("--by", type=click.Choice(REPORT_DIMENSIONS), default="model", show_default=True)
@click.option("--since", default="7d", show_default=True, help="Start of the window (15m, 7d, ISO, Unix).")
@click.option("--project", default=None, help="Only this project.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
@database_option
def report(by: str, since: str, project: str | None, as_csv: bool, database_url: str | None) -> None:
    """Spend, tokens, requests, cost per request, cache savings and monthly run-rate per group."""
    now = time.time_ns()
    since_ns = _since(since)
    store = open_store(database_url)
    rows = cost_report(
        CostStore(store).iter_model_calls(since_ns, project_id=project), by, (now - since_ns) / 1e9
    )
    store.close()
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0].as_dict()) if rows else ["group"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: escape_formula(v) for k, v in row.as_dict().items()})
        return
    click.echo(
        f"{by.upper():36} {'REQUESTS':>9} {'SPEND':>14} {'PER REQUEST':>12} {'SAVED':>12} {'TOKENS IN':>11} "
        f"{'OUT':>9} {'RUN-RATE /30d':>15}"
    )
    for r in rows:
        per = "-" if r.cost_per_request_usd is None else r.cost_per_request_usd.display()
        unpriced = f" ({r.unpriced} unpriced)" if r.unpriced else ""
        click.echo(
            f"{r.group[:36]:36} {r.requests:>9} {r.spend_usd.display():>14} {per:>12} "
            f"{r.saved_usd.display():>12} {r.input_tokens:>11} {r.output_tokens:>9} "
            f"{r.monthly_run_rate_usd.display():>15}{unpriced}"
        )
    if by != "tag":  # a call with several tags counts in each: their sum is no total
        total = Money.sum(r.spend_usd for r in rows)
        click.echo(f"total spend {total.display()} over {len(rows)} groups", err=True)


async def _measure_cascade(
    gateway: Any,
    cascade_name: str,
    strongest: str,
    questions: list[tuple[str, str, Any]],
    scorer_spec: dict[str, Any],
    concurrency: int,
) -> list[CascadeItem]:
    from pilothouse.evals.scoring import Sample, build_scorer
    from pilothouse.gateway import Caller

    scorer = build_scorer(scorer_spec)
    gate = asyncio.Semaphore(concurrency)
    caller = Caller("default")

    async def ask(model: str, question: str) -> tuple[dict[str, Any], Money | None, int]:
        request = {"model": model, "messages": [{"role": "user", "content": question}]}
        call = gateway.start("chat", caller)
        reply = await gateway.chat(call, request, caller)
        if reply.after is not None:
            await reply.after()
        steps = call.extra.get("gateway.cascade", {}).get("escalations", 0) + 1
        return reply.response, None if reply.cost is None else reply.cost.total, steps

    async def correct(item_id: str, question: str, expected: Any, response: dict[str, Any]) -> bool | None:
        text = str(((response.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
        result = await scorer.score(Sample(item_id, {"question": question}, output=text, expected=expected))
        return result.passed

    async def one(item_id: str, question: str, expected: Any) -> CascadeItem:
        async with gate:
            answer, cost, steps = await ask(cascade_name, question)
            strong, strong_cost, _ = await ask(strongest, question)
        return CascadeItem(
            item_id,
            steps,
            cost,
            await correct(item_id, question, expected, answer),
            strong_cost,
            await correct(item_id, question, expected, strong),
        )

    try:
        return list(await asyncio.gather(*(one(*q) for q in questions)))
    finally:
        await gateway.close()


def _new_cost(pricer: Pricer, call: StoredCall) -> Cost | None:
    for model in (call.deployment_model, call.model, call.request_model):
        row = pricer.row_for(call.provider, model, call.start_ns)
        if row is not None:
            priced = price_usage(call.usage, row)
            if call.cost is not None and call.cost.price_version == GATEWAY_CACHE:
                # a gateway cache hit stays free; what it saved is the call's price now
                return Cost(dict.fromkeys(call.cost.items, Money.ZERO), GATEWAY_CACHE, priced.total)
            return priced
    return None


def _same(a: Cost | None, b: Cost | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.total == b.total and a.price_version == b.price_version and a.saved == b.saved


class _Spend:
    """A sum of call costs that keeps apart the calls of unknown cost (no price): they are never $0."""

    def __init__(self) -> None:
        self.known = Money.ZERO
        self.unknown = 0

    def add(self, cost: Cost | None) -> None:
        if cost is None:
            self.unknown += 1
        else:
            self.known += cost.total

    def shown(self, calls: int) -> str:
        if self.unknown == calls:
            return "unknown"
        return self.known.display() + (f" +{self.unknown} unknown" if self.unknown else "")


class _Repriced:
    """One model's re-priced calls: their spend before and after."""

    def __init__(self) -> None:
        self.calls = 0
        self.before = _Spend()
        self.after = _Spend()

    def add(self, before: Cost | None, after: Cost | None) -> None:
        self.calls += 1
        self.before.add(before)
        self.after.add(after)

    def diff(self) -> str:
        if self.before.unknown or self.after.unknown:
            return "-"  # a difference with an unknown cost is unknown
        diff = self.after.known - self.before.known
        return ("+" if diff > Money.ZERO else "") + diff.display()


@costs.command()
@click.option("--since", required=True, help="Re-price calls of traces started since (7d, ISO, Unix).")
@click.option("--until", default=None, help="... and before this time (default: now).")
@click.option("--project", default=None, help="Only this project.")
@click.option("--dry-run", is_flag=True, help="Show the differences without changing anything.")
@config_option
@database_option
def recompute(
    since: str,
    until: str | None,
    project: str | None,
    dry_run: bool,
    config_path: Path | None,
    database_url: str | None,
) -> None:
    """Re-price stored model calls with today's catalogue (after a price correction) and show the diff.

    Trace totals and the dashboard rollups move by the same differences. A call whose model has no
    price in the catalogue now (custom prices come from --config) keeps the cost it has."""
    pricer = Pricer(load_catalogue(config_path))
    since_ns, until_ns = _since(since), _since(until) if until else None
    store = open_store(database_url)
    costs_store = CostStore(store)
    changes: list[tuple[StoredCall, Cost | None]] = []
    by_model: dict[str, _Repriced] = {}
    checked = kept = 0
    for call in costs_store.iter_model_calls(since_ns, until_ns, project):
        checked += 1
        if call.usage.is_empty:
            continue  # nothing to price: a failed call stays as it is
        new = _new_cost(pricer, call)
        if new is None and call.cost is not None:
            kept += 1  # no price now (a config not passed?): never throw a known cost away
            continue
        if _same(call.cost, new):
            continue
        changes.append((call, new))
        by_model.setdefault(call.model or call.request_model or "(none)", _Repriced()).add(call.cost, new)
        if not dry_run and len(changes) >= 500:
            costs_store.set_costs(changes)
            changes.clear()
    if not dry_run:
        costs_store.set_costs(changes)
    store.close()
    if kept:
        click.echo(
            f"{kept} calls kept their cost: their model has no price in the catalogue now "
            "(custom prices need --config or $PILOTHOUSE_CONFIG)",
            err=True,
        )
    if not by_model:
        click.echo(f"{checked} calls checked: " + ("no cost changed" if kept else "every cost is current"))
        return
    click.echo(f"{'MODEL':40} {'CALLS':>7} {'BEFORE':>20} {'AFTER':>20} {'DIFF':>14}")
    for model, repriced in sorted(by_model.items()):
        before, after = repriced.before.shown(repriced.calls), repriced.after.shown(repriced.calls)
        click.echo(f"{model[:40]:40} {repriced.calls:>7} {before:>20} {after:>20} {repriced.diff():>14}")
    changed = sum(v.calls for v in by_model.values())
    verb = "would change" if dry_run else "changed"
    click.echo(f"{checked} calls checked, {changed} {verb}", err=True)


@costs.command("cascade-report")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The gateway config with the cascade.",
)
@click.option("--cascade", "cascade_name", required=True, help="The cascade route to measure.")
@click.option(
    "--dataset",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="JSONL items with a question and its expected answer.",
)
@click.option("--question-field", default="question", show_default=True)
@click.option("--answer-field", default="answer", show_default=True)
@click.option(
    "--scorer",
    default='{"type": "contains", "value": "{{expected}}", "ignore_case": true}',
    show_default=True,
    help="The eval scorer (JSON) that says whether an answer is right.",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True)
def cascade_report(
    config_path: Path,
    cascade_name: str,
    dataset: Path,
    question_field: str,
    answer_field: str,
    scorer: str,
    concurrency: int,
) -> None:
    """Run a dataset through a cascade route and through its strongest model alone: the share kept on
    the cheapest model, the cost saved and the quality retained."""
    import json

    from pilothouse.costs.cascade_report import summarise
    from pilothouse.evals.verifier import add_cascades
    from pilothouse.gateway import Gateway
    from pilothouse.gateway.config import ConfigError, load_gateway_config
    from pilothouse.gateway.router import Router

    try:
        config = load_gateway_config(config_path)
        gateway = Gateway(Router(config), Pricer(PriceCatalogue.packaged(config.prices)))
        add_cascades(gateway, config.cascades)
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc), exit_code=2) from None
    if cascade_name not in gateway.cascades:
        raise CliError(f"{config_path} has no cascade {cascade_name!r}", exit_code=2)
    try:
        spec = json.loads(scorer)
        items = [json.loads(line) for line in dataset.read_text().splitlines() if line.strip()]
        questions = [
            (str(i.get("id", n)), str(i[question_field]), i[answer_field]) for n, i in enumerate(items)
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"cannot read the dataset or the scorer: {exc}", exit_code=2) from None
    strongest = gateway.cascades[cascade_name][0].models[-1]
    from pilothouse.gateway import GatewayError

    try:
        report = asyncio.run(_measure_cascade(gateway, cascade_name, strongest, questions, spec, concurrency))
    except GatewayError as exc:
        raise CliError(f"a model call failed: {exc.message}") from None
    for line in summarise(report).lines():
        click.echo(line)
