"""Monitors under ``/api/monitors``: list and read them (``read`` scope), create, delete and silence
them and acknowledge their alerts (``admin`` scope). Everything is the caller's project's; another
project's monitor or alert answers 404. The use cases are :class:`pilothouse.quality.monitors.Monitors`."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pilothouse.domain.keys import Scope
from pilothouse.domain.monitors import AlertStatus
from pilothouse.quality.monitors import MonitorError, Monitors, alert_json, monitor_json
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse, param_error
from pilothouse.server.state import Services


def _monitors(request: Request) -> tuple[Services, Monitors]:
    state: Services = request.app.state.pilothouse
    return state, Monitors(state.store, state.settings.webhook_allow)


def _api_error(exc: MonitorError) -> ApiError:
    code = {404: "not_found", 409: "limit_reached"}.get(exc.status, "invalid_monitor")
    return ApiError(exc.status, str(exc), code=code, param=exc.param)


async def _body(request: Request, state: Services) -> dict[str, Any]:
    body = await read_json(request, state.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return body


async def list_monitors(request: Request) -> Response:
    """``GET /api/monitors``: the project's monitors with where their detectors stand."""
    state, monitors = _monitors(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    found = await run_in_threadpool(monitors.all, principal.project_id)
    admin = principal.allows(Scope.ADMIN)
    return FastJSONResponse({"data": [monitor_json(m, admin=admin) for m in found]})


async def create_monitor(request: Request) -> Response:
    """``POST /api/monitors`` (admin): ``{"name", "metric", "score_name", "threshold", "model", "route",
    "prompt_name", "prompt_version", "shift", "arl0", "baseline_s", "webhook_url"}``."""
    state, monitors = _monitors(request)
    principal = await state.auth.authenticate(request, Scope.ADMIN)
    body = await _body(request, state)
    try:
        monitor = await run_in_threadpool(monitors.create, principal.project_id, body)
    except MonitorError as exc:
        raise _api_error(exc) from None
    unmatched = await run_in_threadpool(monitors.unmatched, monitor)
    shown = {**monitor_json(monitor, admin=True), "warnings": [unmatched] if unmatched else []}
    return FastJSONResponse(shown, status_code=201)


async def get_monitor(request: Request) -> Response:
    """``GET /api/monitors/{id}``: one monitor and its latest alerts."""
    state, monitors = _monitors(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    monitor_id = request.path_params["monitor_id"]
    try:
        monitor = await run_in_threadpool(monitors.get, principal.project_id, monitor_id)
    except MonitorError as exc:
        raise _api_error(exc) from None
    alerts = await run_in_threadpool(lambda: monitors.alerts(principal.project_id, monitor_id=monitor_id))
    body = monitor_json(monitor, admin=principal.allows(Scope.ADMIN))
    return FastJSONResponse({**body, "alerts": [alert_json(a) for a in alerts]})


async def delete_monitor(request: Request) -> Response:
    """``DELETE /api/monitors/{id}`` (admin): the monitor and its alerts."""
    state, monitors = _monitors(request)
    principal = await state.auth.authenticate(request, Scope.ADMIN)
    try:
        await run_in_threadpool(monitors.delete, principal.project_id, request.path_params["monitor_id"])
    except MonitorError as exc:
        raise _api_error(exc) from None
    return Response(status_code=204)


async def silence_monitor(request: Request) -> Response:
    """``POST /api/monitors/{id}/silence`` (admin): ``{"until": "2h"}`` (a duration from now, or a time:
    ISO 8601 or Unix seconds); ``{"until": null}`` lifts it. Alerts raised meanwhile are stored, not sent."""
    state, monitors = _monitors(request)
    principal = await state.auth.authenticate(request, Scope.ADMIN)
    body = await _body(request, state)
    if extra := sorted(set(body) - {"until"}):
        raise ApiError(400, f"Unknown field {extra[0]!r}.", param=extra[0])
    until = body.get("until")
    if until is not None and not isinstance(until, str | int):
        raise ApiError(400, "'until' must be a time, a duration such as 2h, or null.", param="until")
    try:
        monitor = await run_in_threadpool(
            monitors.silence,
            principal.project_id,
            request.path_params["monitor_id"],
            None if until is None else str(until),
        )
    except MonitorError as exc:
        raise _api_error(exc) from None
    return FastJSONResponse(monitor_json(monitor, admin=True))


async def list_alerts(request: Request) -> Response:
    """``GET /api/monitors/alerts?status=open&monitor=ID&limit=100``: the project's alerts, newest first."""
    state, monitors = _monitors(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    params = request.query_params
    status = None
    if (text := params.get("status")) not in (None, ""):
        try:
            status = AlertStatus(text)
        except ValueError:
            raise param_error("status", "must be open or acknowledged") from None
    limit_text = params.get("limit", "100")
    if not (limit_text.isascii() and limit_text.isdigit() and 1 <= int(limit_text[:6]) <= 1000):
        raise param_error("limit", "must be a whole number from 1 to 1000")
    found = await run_in_threadpool(
        lambda: monitors.alerts(
            principal.project_id,
            monitor_id=params.get("monitor") or None,
            status=status,
            limit=int(limit_text),
        )
    )
    return FastJSONResponse({"data": [alert_json(a) for a in found]})


async def acknowledge_alert(request: Request) -> Response:
    """``POST /api/monitors/alerts/{id}/ack`` (admin): the alert, acknowledged by the caller's key."""
    state, monitors = _monitors(request)
    principal = await state.auth.authenticate(request, Scope.ADMIN)
    by = "admin key" if principal.key is None else f"key {principal.key.name} ({principal.key.prefix})"
    try:
        alert = await run_in_threadpool(
            monitors.acknowledge, principal.project_id, request.path_params["alert_id"], by
        )
    except MonitorError as exc:
        raise _api_error(exc) from None
    return FastJSONResponse(alert_json(alert))


routes = [
    Route("/api/monitors", list_monitors, methods=["GET"]),
    Route("/api/monitors", create_monitor, methods=["POST"]),
    Route("/api/monitors/alerts", list_alerts, methods=["GET"]),
    Route("/api/monitors/alerts/{alert_id}/ack", acknowledge_alert, methods=["POST"]),
    Route("/api/monitors/{monitor_id}", get_monitor, methods=["GET"]),
    Route("/api/monitors/{monitor_id}", delete_monitor, methods=["DELETE"]),
    Route("/api/monitors/{monitor_id}/silence", silence_monitor, methods=["POST"]),
]
