"""Overview pages: the dashboard, models and deployments, and costs. They read the rollups only (exact:
by model and name, with TTFT and cache savings, and by end user, key, prompt version and tag), so their
work does not grow with the number of stored traces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from pilothouse.domain.budgets import Budget, BudgetPeriod, forecast_period_spend
from pilothouse.domain.money import Money
from pilothouse.gateway.redis_client import RedisUnavailable
from pilothouse.server.serialise import json_default
from pilothouse.store.analytics import AnalyticsQueries, RollupRow
from pilothouse.store.breakdowns import dimension_breakdowns
from pilothouse.store.costs import CostStore
from pilothouse.ui import analytics as an
from pilothouse.ui.web import PageContext, UiError

MONTH_S = 30 * 86400


def _window(page: PageContext, default: str) -> an.Window:
    try:
        return an.window(page.params.get("range"), default)
    except an.InvalidRange as exc:
        raise UiError(400, str(exc)) from None


def _refresh(page: PageContext) -> int:
    text = page.params.get("refresh", "0")
    if text not in ("0", "30", "60", "300"):
        raise UiError(400, "'refresh' must be 0, 30, 60 or 300 (seconds).")
    return int(text)


def chart_json(data: dict[str, Any]) -> str:
    """Chart data for a ``<script type="application/json">`` block (no ``</script>`` can appear)."""
    return orjson.dumps(data, default=json_default).decode().replace("<", "\\u003c")


def _exact(
    queries: AnalyticsQueries,
    project_id: str,
    win: an.Window,
    dimensions: tuple[str, ...],
    order: str = "requests",
) -> list[list[tuple[str, an.Totals]]]:
    """The top 20 values of each dimension over the window, exact (the dimension rollups, read once
    for all of them), in the order of ``dimensions``."""
    found = dimension_breakdowns(queries.store, project_id, dimensions, win.start_s, win.end_s, order=order)
    return [an.dimension_totals(dimension, found[dimension][0]) for dimension in dimensions]


def _rows(queries: AnalyticsQueries, project_id: str, win: an.Window) -> list[RollupRow]:
    """The model rollups of the window: their sums, then the histograms of the rows whose sums
    changed since they were last read (the others' are kept in process: AnalyticsQueries.rollup_rows)."""
    return queries.rollup_rows(project_id, win.start_s, win.end_s, win.bucket_s)


Read = tuple[Callable[..., Any], tuple[Any, ...]]


async def _read_all(page: PageContext, win: an.Window, reads: list[Read]) -> list[Any]:
    """The model rollups, then the results of ``reads`` (independent of each other). On
    PostgreSQL each runs in its own worker thread on its own pooled connection, so the page waits for
    the slowest rather than for their sum. On SQLite they run one after the other in one thread: its
    reads hold the GIL while they make rows, and threads contending for it were slower than one
    (benchmarks/ui.py, docs/performance.md)."""
    if page.state.store.dialect == "postgresql":
        return list(
            await asyncio.gather(
                page.run(_rows, page.queries, page.project_id, win),
                *(page.run(fn, *args) for fn, args in reads),
            )
        )

    def one_by_one() -> list[Any]:
        return [_rows(page.queries, page.project_id, win), *(fn(*args) for fn, args in reads)]

    results: list[Any] = await page.run(one_by_one)
    return results


def _key_names(queries: AnalyticsQueries, project_id: str) -> dict[str, str]:
    return {k.id: k.name for k in queries.store.list_api_keys(project_id)}


async def _dashboard_data(page: PageContext, win: an.Window) -> dict[str, Any]:
    # independent reads (_read_all), then the arithmetic on their rows, off the event loop too
    queries, project_id = page.queries, page.project_id
    rows, (costly, slowest), key_names, (by_key, by_user, by_prompt) = await _read_all(
        page,
        win,
        [
            (queries.top_traces, (project_id, win.start_ns, win.end_ns)),
            (_key_names, (queries, project_id)),
            (_exact, (queries, project_id, win, ("key", "user", "prompt"))),
        ],
    )

    def summarise() -> dict[str, Any]:
        return {
            "key_names": key_names,
            "rows": rows,
            "totals": an.rollup_totals(rows),
            "series": an.rollup_series(rows, win),
            "by_model": an.rollup_groups(rows, lambda r: r.model),
            "by_name": an.rollup_groups(rows, lambda r: r.name),
            "by_key": by_key,  # ids; the template shows key names
            "by_user": by_user,
            "by_prompt": by_prompt,
            "costly": costly,
            "slowest": slowest,
        }

    data: dict[str, Any] = await page.run(summarise)
    return data


async def dashboard(page: PageContext) -> Response:
    """``/``: requests, errors, tokens, cost, latency and TTFT over time, breakdowns, top traces."""
    win = _window(page, "24h")
    refresh = _refresh(page)
    data = await _dashboard_data(page, win)
    s = data["series"]
    charts = {
        "requests": {"t": s["t"], "series": {"requests": s["requests"], "errors": s["errors"]}},
        "tokens": {"t": s["t"], "series": {"input": s["input"], "output": s["output"]}},
        "cost": {"t": s["t"], "series": {"cost (USD)": s["cost"]}},
        "latency": {"t": s["t"], "series": {"p50 (ms)": s["p50"], "p95 (ms)": s["p95"]}},
        "ttft": {"t": s["t"], "series": {"TTFT p50 (ms)": s["ttft"]}},
    }
    template = "dashboard_body.html" if page.request.headers.get("hx-request") == "true" else "dashboard.html"
    names = page.state.gateway.model_names()
    return page.render(
        template,
        example_model="sim" if "sim" in names or not names else names[0],
        win=win,
        ranges=list(an.RANGES),
        refresh=refresh,
        charts={k: chart_json(v) for k, v in charts.items()},
        **data,
    )


def _model_health(rows: list[RollupRow]) -> list[tuple[str, an.Totals, float]]:
    groups = an.rollup_groups(rows, lambda r: r.model)
    total = sum(t.requests for _, t in groups) or 1
    return [(name, tot, tot.requests / total) for name, tot in groups]


async def models(page: PageContext) -> Response:
    """``/models``: each deployment's circuit state and load (this process), each model's latency,
    error rate and traffic share (rollups)."""
    win = _window(page, "1h")
    rows = await page.run(page.queries.rollup_rows, page.project_id, win.start_s, win.end_s, win.bucket_s)
    deployments = page.state.gateway.router.health_report()
    return page.render(
        "models.html",
        win=win,
        ranges=list(an.RANGES),
        deployments=deployments,
        models=_model_health(rows),
        settings=page.state.gateway.router.settings,
    )


async def _costs_data(page: PageContext, win: an.Window) -> dict[str, Any]:
    # independent reads, as for the dashboard (_read_all)
    queries, project_id = page.queries, page.project_id
    rows, budgets, key_names, (by_key, by_user, by_tag) = await _read_all(
        page,
        win,
        [
            (CostStore(queries.store).list_budgets, (project_id,)),
            (_key_names, (queries, project_id)),
            (_exact, (queries, project_id, win, ("key", "user", "tag"), "cost")),
        ],
    )

    def summarise() -> dict[str, Any]:
        return {
            "totals": an.rollup_totals(rows),
            "by_model": sorted(
                an.rollup_groups(rows, lambda r: r.model), key=lambda kv: -kv[1].cost_usd.pico
            ),
            "by_key": by_key,  # ids; the template shows key names
            "by_user": by_user,
            "by_tag": by_tag,
            "cost_series": an.cost_series_by_model(rows, win),
            "budgets": budgets,
            "key_names": key_names,
        }

    data: dict[str, Any] = await page.run(summarise)
    return data


async def budget_rows(page: PageContext, budgets: list[Budget]) -> list[dict[str, Any]]:
    """Budgets with their spend, reservations and forecast now (as ``GET /api/budgets`` shows them)."""
    now = datetime.now(UTC)
    out = []
    for b in budgets:
        try:
            spent, reserved = await page.state.budgets.usage(b)
        except RedisUnavailable:  # the page still shows what the database has recorded
            spent, reserved = await page.state.budgets.stored_spend(b), Money.ZERO
        forecast = forecast_period_spend(spent, b.period, now)
        out.append(
            {
                "budget": b,
                "spent": spent,
                "reserved": reserved,
                "forecast": forecast,
                "fraction": min(1.0, spent.ratio(b.limit_usd)) if b.limit_usd else (1.0 if spent else 0.0),
                "over": spent >= b.limit_usd if b.limit_usd else bool(spent),
                "forecast_over": forecast is not None
                and forecast > b.limit_usd
                and b.period != BudgetPeriod.TOTAL,
            }
        )
    return out


async def costs(page: PageContext) -> Response:
    """``/costs``: spend over time and by model, key, user and tag, cache savings (rollups, exact), the
    monthly run-rate, budgets."""
    win = _window(page, "7d")
    data = await _costs_data(page, win)
    totals: an.Totals = data["totals"]
    run_rate = totals.cost_usd * (MONTH_S / win.seconds) if win.seconds else Money.ZERO
    return page.render(
        "costs.html",
        win=win,
        ranges=list(an.RANGES),
        run_rate=run_rate,
        spend_chart=chart_json(
            {
                "t": data["cost_series"]["t"],
                "series": {k: v for k, v in data["cost_series"].items() if k != "t"},
            }
        ),
        budget_rows=await budget_rows(page, data["budgets"]),
        **data,
    )
