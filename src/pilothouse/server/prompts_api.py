"""The prompt registry under ``/api/prompts``: list, read a version (by label or number), list versions,
create a version, move a label, run a canary and read where it stands, diff two versions, the audit
list. Reads need the ``read`` scope,
changes the ``admin`` scope; every route sees the caller's project only. It translates and renders:
the use cases are :class:`pilothouse.prompts.PromptRegistry`'s."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pilothouse.domain.keys import Scope
from pilothouse.domain.prompts import PromptError, check_label, ref_from_fields
from pilothouse.improve.canary import CanarySettings, canary_status
from pilothouse.prompts import PromptNotFound, PromptRegistry
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse, param_error
from pilothouse.server.state import Services

MAX_PROMPT_BODY = 512 * 1024  # a version's document; the registry bounds the template itself


def _services(request: Request) -> Services:
    services: Services = request.app.state.pilothouse
    return services


def _registry(request: Request) -> PromptRegistry:
    return _services(request).prompts


def _actor(principal: Any) -> str:
    return str(principal.identity)


def _version_param(params: Any, name: str) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or int(text) < 1:
        raise param_error(name, "must be a version number from 1")
    return int(text)


def _label_param(params: Any) -> str | None:
    """The ``label`` query parameter, checked (a 400 naming it when it cannot be a label)."""
    label: str | None = params.get("label")
    if label is not None:
        try:
            check_label(label, settable=False)
        except PromptError as exc:
            raise ApiError(400, str(exc), code="invalid_prompt", param="label") from None
    return label


async def _guarded(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a registry call in a thread; its usage errors become 400/404 in the API's JSON shape."""
    try:
        return await run_in_threadpool(call, *args, **kwargs)
    except PromptNotFound as exc:
        raise ApiError(404, str(exc), code="not_found") from None
    except PromptError as exc:
        raise ApiError(400, str(exc), code="invalid_prompt") from None


async def list_prompts(request: Request) -> Response:
    """``GET /api/prompts``: the project's prompts with their newest version and labels."""
    principal = await _services(request).auth.authenticate(request, Scope.READ)
    found = await _guarded(_registry(request).list_prompts, principal.project_id)
    return FastJSONResponse({"data": [summary.document() for summary in found]})


async def get_prompt(request: Request) -> Response:
    """``GET /api/prompts/{name}?label=production`` or ``?version=3`` (default: ``production``)."""
    principal = await _services(request).auth.authenticate(request, Scope.READ)
    params = request.query_params
    label = _label_param(params)
    try:
        ref = ref_from_fields(request.path_params["name"], label, _version_param(params, "version"))
    except PromptError as exc:
        raise ApiError(400, str(exc), code="invalid_prompt") from None
    found = await _guarded(
        _registry(request).get, principal.project_id, ref.name, label=ref.label, version=ref.version
    )
    return FastJSONResponse(found.document())


async def list_versions(request: Request) -> Response:
    """``GET /api/prompts/{name}/versions``: every version, newest first."""
    principal = await _services(request).auth.authenticate(request, Scope.READ)
    found = await _guarded(_registry(request).versions, principal.project_id, request.path_params["name"])
    return FastJSONResponse({"data": [version.document() for version in found]})


async def create_version(request: Request) -> Response:
    """``POST /api/prompts/{name}/versions`` with ``{"prompt": ..., "model", "parameters", "tools",
    "response_format", "message", "labels": [...]}``: the new version (201)."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.ADMIN)
    body = await read_json(request, MAX_PROMPT_BODY)
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object with 'prompt'.", code="invalid_prompt")
    labels = body.pop("labels", None) or []
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ApiError(400, "'labels' must be a list of label names.", code="invalid_prompt", param="labels")
    created = await _guarded(
        services.prompts.create,
        principal.project_id,
        request.path_params["name"],
        body,
        actor=_actor(principal),
        labels=labels,
    )
    return FastJSONResponse(created.document(), status_code=201)


async def move_label(request: Request) -> Response:
    """``POST /api/prompts/{name}/labels`` with ``{"label": "production", "version": 3}``: point the
    label at the version (a rollback is this too); answers where it pointed before, and ``changed``:
    false when it already pointed there (nothing is recorded then and a running canary goes on)."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.ADMIN)
    body = await read_json(request, 4096)
    if not isinstance(body, dict) or not isinstance(body.get("label"), str):
        raise ApiError(400, 'The body must be {"label": NAME, "version": N}.', code="invalid_prompt")
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 10**9:
        raise ApiError(
            400, "'version' must be a version number from 1.", code="invalid_prompt", param="version"
        )
    name = request.path_params["name"]
    previous = await _guarded(
        services.prompts.set_label,
        principal.project_id,
        name,
        body["label"],
        version,
        actor=_actor(principal),
    )
    return FastJSONResponse(
        {
            "name": name,
            "label": body["label"],
            "version": version,
            "previous_version": previous,
            "changed": previous != version,
        }
    )


async def set_canary(request: Request) -> Response:
    """``POST /api/prompts/{name}/canary`` with ``{"label": "production", "version": 3, "share": 0.1}``
    (``"version": null`` stops it): split the label's gateway traffic, sticky per end user. Optional
    ``score`` and ``margin`` decide this canary instead of the server's settings."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.ADMIN)
    body = await read_json(request, 4096)
    if not isinstance(body, dict) or not isinstance(body.get("label", "production"), str):
        raise ApiError(400, 'The body must be {"label", "version", "share"}.', code="invalid_prompt")
    version, share = body.get("version"), body.get("share", 0.1)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 10**9
    ):
        raise ApiError(
            400, "'version' must be a version number from 1, or null.", code="invalid_prompt", param="version"
        )
    if isinstance(share, bool) or not isinstance(share, int | float):
        raise ApiError(400, "'share' must be a number between 0 and 1.", code="invalid_prompt", param="share")
    name, label = request.path_params["name"], body.get("label", "production")
    main = await _guarded(
        services.prompts.set_canary,
        principal.project_id,
        name,
        label,
        version,
        float(share),
        actor=_actor(principal),
        score=body.get("score"),
        margin=body.get("margin"),
    )
    return FastJSONResponse(
        {"name": name, "label": label, "version": main, "canary_version": version, "share": share}
    )


async def get_canary(request: Request) -> Response:
    """``GET /api/prompts/{name}/canary?label=production``: the label's running canary with the
    sequential test's figures now, and the canary controller's past decisions."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.READ)
    label = _label_param(request.query_params) or "production"
    status = await _guarded(
        canary_status,
        services.store,
        services.prompts,
        CanarySettings.of(services.settings),
        principal.project_id,
        request.path_params["name"],
        label,
    )
    return FastJSONResponse(status.document())


async def diff(request: Request) -> Response:
    """``GET /api/prompts/{name}/diff?from=1&to=2``: the unified diff (template and configuration)."""
    principal = await _services(request).auth.authenticate(request, Scope.READ)
    old, new = _version_param(request.query_params, "from"), _version_param(request.query_params, "to")
    if old is None or new is None:
        raise param_error("from" if old is None else "to", "give both 'from' and 'to' version numbers")
    lines = await _guarded(
        _registry(request).diff, principal.project_id, request.path_params["name"], old, new
    )
    return FastJSONResponse({"from": old, "to": new, "diff": "\n".join(lines)})


async def history(request: Request) -> Response:
    """``GET /api/prompts/{name}/history?limit=100``: who changed what and when, newest first."""
    principal = await _services(request).auth.authenticate(request, Scope.READ)
    text = request.query_params.get("limit") or "100"
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= 1000):
        raise param_error("limit", "must be a whole number from 1 to 1000")
    events = await _guarded(
        _registry(request).history, principal.project_id, request.path_params["name"], int(text)
    )
    return FastJSONResponse({"data": [event.document() for event in events]})


routes = [
    Route("/api/prompts", list_prompts, methods=["GET"]),
    Route("/api/prompts/{name}", get_prompt, methods=["GET"]),
    Route("/api/prompts/{name}/versions", list_versions, methods=["GET"]),
    Route("/api/prompts/{name}/versions", create_version, methods=["POST"]),
    Route("/api/prompts/{name}/labels", move_label, methods=["POST"]),
    Route("/api/prompts/{name}/canary", set_canary, methods=["POST"]),
    Route("/api/prompts/{name}/canary", get_canary, methods=["GET"]),
    Route("/api/prompts/{name}/diff", diff, methods=["GET"]),
    Route("/api/prompts/{name}/history", history, methods=["GET"]),
]
