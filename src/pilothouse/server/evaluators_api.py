"""Online evaluators under ``/api/evaluators``: list (with counts and the worker's health), create,
read, edit (a changed definition is a new version), delete, and backfill a time range. Reads need the
``read`` scope, changes ``admin``; each sees the caller's project only. docs/online-evals.md."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pilothouse.domain.keys import Scope
from pilothouse.domain.timeparse import iso, parse_time_ns
from pilothouse.quality.online import DuplicateEvaluator, OnlineEvaluators, RuleError
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse
from pilothouse.server.state import Services
from pilothouse.store.online import WorkItem

MAX_DEFINITION_BYTES = 64 * 1024  # an evaluator's rules and scorer spec; far more than any needs


def _services(request: Request) -> tuple[Services, OnlineEvaluators]:
    services: Services = request.app.state.pilothouse
    assert services.online is not None
    return services, services.online


async def _body(request: Request, services: Services) -> dict[str, Any]:
    body = await read_json(request, min(services.settings.max_body_bytes, MAX_DEFINITION_BYTES))
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return body


def _rule_error(exc: RuleError) -> ApiError:
    """A 400 whose ``param`` is the field the message names first (``'sampling' must be ...``)."""
    named = re.match(r"'([\w.]+)'", str(exc))
    return ApiError(
        400, f"Invalid evaluator: {exc}.", code="invalid_evaluator", param=named.group(1) if named else None
    )


def _enabled(body: dict[str, Any]) -> bool | None:
    value = body.get("enabled")
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, "'enabled' must be true or false.", param="enabled")
    return value


def item_document(item: WorkItem) -> dict[str, Any]:
    """One work item as JSON."""
    return {
        "trace_id": item.trace_id,
        "version": item.version,
        "state": item.state,
        "attempts": item.attempts,
        "value": item.value,
        "reason": item.reason,
        "cost_usd": item.cost_usd,
        "score_id": item.score_id,
        "finished_at": None if item.finished_ns is None else iso(item.finished_ns),
    }


def _not_found(name: str) -> ApiError:
    return ApiError(404, f"No evaluator named {name[:100]!r} in this project.", code="not_found")


async def list_evaluators(request: Request) -> Response:
    """``GET /api/evaluators``: the project's evaluators with their counts, and the worker's health."""
    services, online = _services(request)
    principal = await services.auth.authenticate(request, Scope.READ)
    statuses = await run_in_threadpool(online.statuses, principal.project_id)
    worker = None if services.online_worker is None else services.online_worker.health()
    return FastJSONResponse({"data": [s.document() for s in statuses], "worker": worker})


async def create_evaluator(request: Request) -> Response:
    """``POST /api/evaluators`` (admin): ``{"name", "enabled", "filters", "sampling", "scorer", "judge",
    "daily_cost_cap_usd", "context"}``."""
    services, online = _services(request)
    principal = await services.auth.authenticate(request, Scope.ADMIN)
    body = await _body(request, services)
    enabled = _enabled(body)
    document = {k: v for k, v in body.items() if k not in ("name", "enabled")}
    try:
        row = await run_in_threadpool(
            online.create, principal.project_id, body.get("name"), document, enabled=enabled is not False
        )
    except RuleError as exc:
        raise _rule_error(exc) from None
    except DuplicateEvaluator:
        raise ApiError(409, f"An evaluator named {body.get('name')!r} exists.", code="conflict") from None
    status = await run_in_threadpool(online.status, principal.project_id, row.name)
    assert status is not None
    return FastJSONResponse(status.document(), status_code=201)


async def get_evaluator(request: Request) -> Response:
    """``GET /api/evaluators/{name}``: one evaluator, its counts and its latest items."""
    services, online = _services(request)
    principal = await services.auth.authenticate(request, Scope.READ)
    name = str(request.path_params["name"])
    status = await run_in_threadpool(online.status, principal.project_id, name)
    if status is None:
        raise _not_found(name)
    items = await run_in_threadpool(online.online.items, status.evaluator.id, limit=50)
    return FastJSONResponse({**status.document(), "items": [item_document(i) for i in items]})


async def update_evaluator(request: Request) -> Response:
    """``PUT /api/evaluators/{name}`` (admin): a whole new definition (a new version when it differs),
    and/or ``enabled``; ``{"enabled": false}`` alone pauses it."""
    services, online = _services(request)
    principal = await services.auth.authenticate(request, Scope.ADMIN)
    name = str(request.path_params["name"])
    body = await _body(request, services)
    if "name" in body and body["name"] != name:
        raise ApiError(400, "An evaluator cannot be renamed; create one with the new name.", param="name")
    enabled = _enabled(body)
    document = {k: v for k, v in body.items() if k not in ("name", "enabled")}
    try:
        row = await run_in_threadpool(online.update, principal.project_id, name, document or None, enabled)
    except RuleError as exc:
        raise _rule_error(exc) from None
    if row is None:
        raise _not_found(name)
    status = await run_in_threadpool(online.status, principal.project_id, name)
    assert status is not None
    return FastJSONResponse(status.document())


async def delete_evaluator(request: Request) -> Response:
    """``DELETE /api/evaluators/{name}`` (admin): it and its unfinished work; its scores stay."""
    services, online = _services(request)
    principal = await services.auth.authenticate(request, Scope.ADMIN)
    name = str(request.path_params["name"])
    if not await run_in_threadpool(online.delete, principal.project_id, name):
        raise _not_found(name)
    return FastJSONResponse({"deleted": name})


def _time(body: dict[str, Any], key: str, default: str, now_ns: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ApiError(
            400, f"'{key}' must be a time: ISO 8601, Unix seconds or a duration back (7d).", param=key
        )
    try:
        return parse_time_ns(str(value), now_ns)
    except ValueError as exc:
        raise ApiError(400, f"'{key}': {exc}.", param=key) from None


async def backfill(request: Request) -> Response:
    """``POST /api/evaluators/{name}/backfill`` (admin): ``{"start": "7d", "end": "0s"}``: queue what the
    current version picks among traces that started in [start, end)."""
    services, online = _services(request)
    principal = await services.auth.authenticate(request, Scope.ADMIN)
    name = str(request.path_params["name"])
    body = await _body(request, services)
    if extra := sorted(set(body) - {"start", "end"}):
        raise ApiError(400, f"Unknown field {extra[0]!r}.", param=extra[0])
    now = time.time_ns()
    start, end = _time(body, "start", "1d", now), _time(body, "end", "0s", now)
    if end <= start:
        raise ApiError(400, "'end' must be after 'start'.", param="end")
    result = await run_in_threadpool(online.backfill, principal.project_id, name, start, end)
    if result is None:
        raise _not_found(name)
    return FastJSONResponse(
        {"traces": result.traces, "queued": result.queued, "truncated": result.truncated}, status_code=202
    )


routes = [
    Route("/api/evaluators", list_evaluators, methods=["GET"]),
    Route("/api/evaluators", create_evaluator, methods=["POST"]),
    Route("/api/evaluators/{name}", get_evaluator, methods=["GET"]),
    Route("/api/evaluators/{name}", update_evaluator, methods=["PUT"]),
    Route("/api/evaluators/{name}", delete_evaluator, methods=["DELETE"]),
    Route("/api/evaluators/{name}/backfill", backfill, methods=["POST"]),
]
