"""Admission of a gateway request: the key's model allow-list and rate limits, then its budgets (the
worst-case cost held by reservation, settled when the call ends)."""

from __future__ import annotations

import math
from typing import Any

from pilothouse.costs.pricing import estimate_prompt_tokens, max_output_tokens, worst_case_cost
from pilothouse.domain.traces import Cost
from pilothouse.gateway.budgets import BudgetExceeded
from pilothouse.gateway.recording import GatewayCall
from pilothouse.server.auth import Principal
from pilothouse.server.errors import ApiError
from pilothouse.server.state import AppState


async def admit(state: AppState, principal: Principal, model: str) -> dict[str, str]:
    """Check the key's model allow-list and rate limits (counting this request); the rate-limit
    headers to send. Raises a 403 or 429 :class:`ApiError`."""
    key = principal.key
    if key is None:  # the admin secret has no limits
        return {}
    if not key.may_use(model):
        raise ApiError(
            403, f"This key may not call the model '{model}'.", code="model_not_allowed", param="model"
        )
    if key.rpm is None and key.tpm is None:
        return {}
    decision = await state.limiter.admit(key.id, key.rpm, key.tpm)
    headers = {}
    if key.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(key.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, key.rpm - decision.requests))
    if key.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(key.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, key.tpm - decision.tokens))
    if not decision.allowed:
        limit = key.rpm if decision.exceeded == "requests" else key.tpm
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
        raise ApiError(
            429,
            f"Rate limit reached for this key: {limit} {decision.exceeded} per minute. "
            f"Retry after {headers['Retry-After']} s.",
            code="rate_limit_exceeded",
            headers=headers,
        )
    return headers


async def reserve_budget(
    state: AppState, principal: Principal, call: GatewayCall, body: dict[str, Any]
) -> None:
    """Hold the request's worst-case cost against the budgets it counts against (429
    ``budget_exceeded`` when a hard budget cannot take it)."""
    budgets = await state.budgets.applicable(
        principal.project_id, principal.key.id if principal.key else None, call.user_id, call.tags
    )
    if not budgets:
        return
    worst = worst_case_usd(state, body)
    if worst is None:  # a model with no price: its spend cannot be counted, so it cannot be held
        return
    try:
        call.reservation = await state.budgets.reserve(budgets, worst)
    except BudgetExceeded as exc:
        error = ApiError(429, str(exc), code="budget_exceeded")
        error.kind = "budget_exceeded"
        raise error from None


def worst_case_usd(state: AppState, body: dict[str, Any]) -> float | None:
    """The most a request can cost on any deployment that may serve it (fallbacks included); None
    when one of them has no price."""
    model = body["model"]
    if (cascade := state.cascades.get(model)) is not None:  # a cascade may call every one of its models
        total = 0.0
        for step in cascade[0].models:
            step_worst = worst_case_usd(state, {**body, "model": step})
            if step_worst is None:
                return None
            total += step_worst
        return total
    prompt_tokens = estimate_prompt_tokens(body)
    worst = 0.0
    for name in [model, *state.router.config.fallbacks.get(model, [])]:
        for deployment in state.router.deployments.get(name, []):
            row = state.pricer.row_for(deployment.provider, deployment.model)
            if row is None:
                return None
            worst = max(worst, worst_case_cost(row, prompt_tokens, max_output_tokens(body, row)))
    return worst


async def settle_budget(
    state: AppState, call: GatewayCall, cost: Cost | None, *, unknown_is_worst_case: bool = False
) -> None:
    """Release the call's budget hold, counting its actual cost (0 for a call that failed before
    spending; the worst case held when it spent an unknown amount)."""
    if call.reservation is not None:
        spent = call.reservation.amount if unknown_is_worst_case else cost.total if cost else 0.0
        await state.budgets.settle(call.reservation, spent)
