"""Cost routes under ``/api``: spend reports and budgets (with their spend and reservations now)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pilothouse.costs.reports import REPORT_DIMENSIONS, cost_report
from pilothouse.domain.budgets import (
    Budget,
    BudgetPeriod,
    BudgetScope,
    budget_target_problem,
    forecast_period_spend,
)
from pilothouse.domain.keys import Scope
from pilothouse.domain.money import Money
from pilothouse.domain.timeparse import parse_time_ns
from pilothouse.domain.webhooks import WebhookRefused, displayed_webhook_url
from pilothouse.gateway.cache import LocalResponseCache
from pilothouse.gateway.webhooks import resolve_webhook
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse
from pilothouse.server.state import Services
from pilothouse.store.costs import CostStore


def _state(request: Request) -> Services:
    state: Services = request.app.state.pilothouse
    return state


async def costs_report(request: Request) -> Response:
    """``GET /api/costs?by=model&since=7d``: spend per group (model, key, user, tag, prompt)."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    by = request.query_params.get("by", "model")
    if by not in REPORT_DIMENSIONS:
        raise ApiError(400, f"'by' must be one of {', '.join(REPORT_DIMENSIONS)}.", param="by")
    now = time.time_ns()
    try:
        since_ns = parse_time_ns(request.query_params.get("since", "7d"), now)
    except ValueError as exc:
        raise ApiError(400, f"Invalid query parameter 'since': {exc}", param="since") from None

    def build() -> list[dict[str, Any]]:
        calls = CostStore(state.store).iter_model_calls(since_ns, project_id=principal.project_id)
        return [r.as_dict() for r in cost_report(calls, by, (now - since_ns) / 1e9)]

    return FastJSONResponse({"by": by, "since_ns": since_ns, "data": await run_in_threadpool(build)})


async def _budget_json(state: Services, budget: Budget, *, admin: bool) -> dict[str, Any]:
    """A budget with its spend; its webhook URL never with credentials, and only its host unless the
    caller is an admin (a receiver's secret token is in its path or query)."""
    spent, reserved = await state.budgets.usage(budget)
    return {
        "id": budget.id,
        "scope": budget.scope.value,
        "scope_value": budget.scope_value,
        "period": budget.period.value,
        "limit_usd": budget.limit_usd,
        "hard": budget.hard,
        "alert_thresholds": list(budget.alert_thresholds),
        "webhook_url": displayed_webhook_url(budget.webhook_url, full=admin),
        "spent_usd": spent,
        "reserved_usd": reserved,
        "forecast_usd": forecast_period_spend(spent, budget.period, datetime.now(UTC)),
    }


async def list_budgets(request: Request) -> Response:
    """``GET /api/budgets``: the project's budgets with spend and in-flight reservations."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    budgets = await run_in_threadpool(CostStore(state.store).list_budgets, principal.project_id)
    admin = principal.allows(Scope.ADMIN)
    return FastJSONResponse({"data": [await _budget_json(state, b, admin=admin) for b in budgets]})


def _choice(
    body: dict[str, Any], name: str, kind: type[BudgetScope] | type[BudgetPeriod], default: str
) -> Any:
    value = body.get(name, default)
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(v.value for v in kind)
        raise ApiError(400, f"'{name}' must be one of {allowed}.", param=name) from None


async def create_budget(request: Request) -> Response:
    """``POST /api/budgets`` (admin): ``{"scope", "scope_value", "period", "limit_usd", "hard",
    "alert_thresholds", "webhook_url"}``."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.ADMIN)
    body = await read_json(request, state.settings.max_body_bytes, state.body_budget)
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.")
    allowed = {"scope", "scope_value", "period", "limit_usd", "hard", "alert_thresholds", "webhook_url"}
    if extra := sorted(set(body) - allowed):
        raise ApiError(400, f"Unknown field {extra[0]!r}.", param=extra[0])
    scope = _choice(body, "scope", BudgetScope, "project")
    period = _choice(body, "period", BudgetPeriod, "month")
    limit = body.get("limit_usd")
    if not isinstance(limit, int | float) or isinstance(limit, bool) or not 0 <= limit < float("inf"):
        raise ApiError(400, "'limit_usd' must be a number >= 0.", param="limit_usd")
    value = body.get("scope_value", "")
    if not isinstance(value, str):
        raise ApiError(400, "'scope_value' must be a string.", param="scope_value")
    keys: list[tuple[str, bool]] = []
    if scope is BudgetScope.KEY and value:
        listed = await run_in_threadpool(state.store.list_api_keys, principal.project_id)
        keys = [(key.id, key.active) for key in listed]
    if problem := budget_target_problem(scope, value, keys):
        raise ApiError(400, f"{problem[0].upper()}{problem[1:]}.", param="scope_value")
    thresholds = body.get("alert_thresholds", [0.5, 0.8, 1.0])
    if not isinstance(thresholds, list) or not all(isinstance(t, int | float) and t > 0 for t in thresholds):
        raise ApiError(
            400, "'alert_thresholds' must be a list of positive fractions.", param="alert_thresholds"
        )
    webhook = body.get("webhook_url")
    if webhook is not None:
        try:  # where alerts may go: public addresses, or those the webhook_allow setting names
            await resolve_webhook(webhook, state.settings.webhook_allow)
        except WebhookRefused as exc:
            raise ApiError(400, f"'webhook_url' is refused: {exc}.", param="webhook_url") from None
    budget = await run_in_threadpool(
        CostStore(state.store).create_budget,
        principal.project_id,
        scope,
        value,
        period,
        Money.from_usd(limit),
        hard=bool(body.get("hard", True)),
        alert_thresholds=sorted(float(t) for t in thresholds),
        webhook_url=webhook,
    )
    state.budgets.invalidate()
    return FastJSONResponse(await _budget_json(state, budget, admin=True), status_code=201)


async def delete_budget(request: Request) -> Response:
    """``DELETE /api/budgets/{id}`` (admin)."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.ADMIN)
    budget_id = request.path_params["budget_id"]
    deleted = await run_in_threadpool(CostStore(state.store).delete_budget, budget_id, principal.project_id)
    if not deleted:
        raise ApiError(404, f"No budget {budget_id!r} in this project.", code="budget_not_found")
    state.budgets.invalidate()
    return Response(status_code=204)


async def cache_report(request: Request) -> Response:
    """``GET /api/cache``: the caches' settings and, per model, the semantic cache's hits, misses,
    re-checked hits and measured precision (and whether it switched itself off). Counts are the
    caller's project's own."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    caches = state.gateway.caches
    exact: dict[str, Any] = {"enabled": caches.exact is not None}
    if isinstance(caches.exact, LocalResponseCache):
        exact["entries"] = caches.exact.entries_of(principal.project_id)
    semantic = (
        {"enabled": False}
        if caches.semantic is None
        else {"enabled": True, **caches.semantic.report(principal.project_id)}
    )
    return FastJSONResponse({"exact": exact, "semantic": semantic})


routes = [
    Route("/api/cache", cache_report, methods=["GET"]),
    Route("/api/costs", costs_report, methods=["GET"]),
    Route("/api/budgets", list_budgets, methods=["GET"]),
    Route("/api/budgets", create_budget, methods=["POST"]),
    Route("/api/budgets/{budget_id}", delete_budget, methods=["DELETE"]),
]
