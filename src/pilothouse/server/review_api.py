"""Human review under ``/api/review``: score configs, annotation queues, the next item for a reviewer,
reviews, agreement, calibration labels and corrected outputs sent to a dataset (the review service's
use cases, rendered as JSON). Creating configs and queues needs the ``admin`` scope; the rest ``read``.
The reviewer of an API call is its key (``key:NAME``; ``admin`` for the admin secret)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pilothouse.domain.keys import Scope
from pilothouse.domain.review import ScoreKind
from pilothouse.quality.review import ItemView, ReviewError, ReviewNotFound, ReviewService
from pilothouse.server.api import trace_query_from_params
from pilothouse.server.auth import Principal
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse
from pilothouse.server.state import Services

Endpoint = Callable[[Request], Awaitable[Response]]


def reviewer_of(principal: Principal) -> str:
    """Who a review made with this key is recorded as (:func:`key_identity`)."""
    return principal.identity


def item_json(view: ItemView) -> dict[str, Any]:
    """An item as the API shows it: the item, the texts to review, its configs and the reviews so far."""
    item = view.item
    kinds = {c.name: c.kind for c in view.configs}
    return {
        "id": item.id,
        "queue": view.queue.name,
        "trace_id": item.trace_id,
        "reason": item.reason,
        "source": item.source,
        "status": item.status.value,
        "reviews": item.reviews,
        "lease_owner": item.lease_owner,
        "lease_until_ns": item.lease_until_ns,
        "input": view.input,
        "context": list(view.context),
        "output": view.output,
        "unsupported_spans": [list(s) for s in item.spans],
        "configs": [config_json(c) for c in view.configs],
        "reviews_so_far": [
            {
                "reviewer": r.reviewer,
                "skipped": r.skipped,
                "corrected_output": r.corrected_output,
                "comment": r.comment,
                "scores": {s.config_name: _score_value(s, kinds.get(s.config_name)) for s in r.scores},
            }
            for r in view.reviews
        ],
    }


def _score_value(score: Any, kind: ScoreKind | None) -> Any:
    """A review's score as the reviewer gave it: a boolean config's answer as true or false, a
    category's label as text, a number as a number."""
    if kind is ScoreKind.BOOLEAN and score.string_value in ("true", "false"):
        return score.string_value == "true"
    return score.string_value if score.string_value is not None else score.value


def config_json(config: Any) -> dict[str, Any]:
    """A score config as JSON."""
    return {
        "name": config.name,
        "kind": config.kind.value,
        "description": config.description,
        "min_value": config.min_value,
        "max_value": config.max_value,
        "categories": list(config.categories),
    }


def _guarded(scope: Scope, handler: Callable[[Request, Services, Principal, ReviewService], Any]) -> Endpoint:
    """An endpoint that authenticates, runs ``handler`` off the event loop's way, and turns review errors
    into JSON 400/404s."""

    async def endpoint(request: Request) -> Response:
        state: Services = request.app.state.pilothouse
        principal = await state.auth.authenticate(request, scope)
        service = ReviewService(state.store, state.evaluations)
        try:
            result = await handler(request, state, principal, service)
        except ReviewNotFound as exc:
            raise ApiError(404, _sentence(str(exc)), code="not_found") from None
        except ReviewError as exc:
            raise ApiError(400, _sentence(str(exc)), code="invalid_review_request") from None
        if isinstance(result, Response):
            return result
        return FastJSONResponse(result)

    return endpoint


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


async def _body(request: Request, state: Services) -> dict[str, Any]:
    body = await read_json(request, state.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.", code="invalid_body")
    return body


def _text(body: dict[str, Any], name: str, default: str = "") -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string.", code="invalid_body", param=name)
    return value


def _int(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be a whole number.", code="invalid_body", param=name)
    return value


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"'{name}' must be a number.", code="invalid_body", param=name)
    return float(value)


def _strings(body: dict[str, Any], name: str, limit: int = 1000) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or len(value) > limit or not all(isinstance(v, str) for v in value):
        raise ApiError(
            400, f"'{name}' must be a list of at most {limit} strings.", code="invalid_body", param=name
        )
    return value


# -- configs and queues -----------------------------------------------------------------------------------


async def _list_configs(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    configs = await run_in_threadpool(service.configs, who.project_id)
    return {"data": [config_json(c) for c in configs]}


async def _create_config(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    body = await _body(request, state)
    config = await run_in_threadpool(
        lambda: service.create_config(
            who.project_id,
            _text(body, "name"),
            _text(body, "kind"),
            description=_text(body, "description"),
            min_value=_number(body, "min_value"),
            max_value=_number(body, "max_value"),
            categories=_strings(body, "categories", 20),
        )
    )
    return FastJSONResponse(config_json(config), status_code=201)


def _queue_json(queue: Any, counts: dict[str, int] | None = None) -> dict[str, Any]:
    out = {
        "name": queue.name,
        "description": queue.description,
        "configs": list(queue.config_names),
        "reviews_per_item": queue.reviews_per_item,
        "lease_seconds": queue.lease_seconds,
    }
    if counts is not None:
        out["items"] = counts
    return out


async def _list_queues(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    queues = await run_in_threadpool(service.queues, who.project_id)
    return {"data": [_queue_json(q, counts) for q, counts in queues]}


async def _create_queue(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    body = await _body(request, state)
    queue = await run_in_threadpool(
        lambda: service.create_queue(
            who.project_id,
            _text(body, "name"),
            _strings(body, "configs", 20),
            description=_text(body, "description"),
            reviews_per_item=_int(body, "reviews_per_item", 1),
            lease_seconds=_int(body, "lease_seconds", 600),
        )
    )
    return FastJSONResponse(_queue_json(queue), status_code=201)


# -- filling ------------------------------------------------------------------------------------------------


async def _add_items(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    body = await _body(request, state)
    spans = body.get("unsupported_spans")
    source = _text(body, "source", "api")
    added, unknown = await run_in_threadpool(
        lambda: service.add_traces(
            who.project_id,
            request.path_params["queue"],
            _strings(body, "trace_ids"),
            _text(body, "reason"),
            source=source,
            spans=spans,
        )
    )
    return {"added": added, "unknown_trace_ids": unknown}


async def _fill(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    body = await _body(request, state)
    filters = body.get("filters", {})
    if not isinstance(filters, dict):
        raise ApiError(400, "'filters' must be an object of trace-list filters.", code="invalid_body")
    pairs: list[tuple[str, str]] = []
    for key, value in filters.items():
        for one in value if isinstance(value, list) else [value]:
            if not isinstance(one, str | int | float) or isinstance(one, bool):
                raise ApiError(400, f"filter '{key}' must be a string or number.", code="invalid_body")
            pairs.append((str(key), str(one)))
    query = trace_query_from_params(QueryParams(pairs), time.time_ns())
    added = await run_in_threadpool(
        lambda: service.fill_from_filter(
            who.project_id,
            request.path_params["queue"],
            query,
            limit=_int(body, "limit", 100),
            reason=_text(body, "reason"),
        )
    )
    return {"added": added}


async def _list_items(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    queue = await run_in_threadpool(service.queue, who.project_id, request.path_params["queue"])
    items = await run_in_threadpool(service.store.list_items, queue, None, 500)
    return {
        "data": [
            {
                "id": i.id,
                "trace_id": i.trace_id,
                "status": i.status.value,
                "reviews": i.reviews,
                "reason": i.reason,
            }
            for i in items
        ]
    }


# -- reviewing ----------------------------------------------------------------------------------------------


async def _next(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    view = await run_in_threadpool(
        service.next_item, who.project_id, request.path_params["queue"], reviewer_of(who)
    )
    return {"item": None if view is None else item_json(view)}


async def _get_item(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    view = await run_in_threadpool(service.item, who.project_id, request.path_params["item_id"])
    return item_json(view)


async def _submit(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    body = await _body(request, state)
    scores = body.get("scores", {})
    if not isinstance(scores, dict):
        raise ApiError(400, "'scores' must be an object: score config name -> value.", code="invalid_body")
    view = await run_in_threadpool(
        lambda: service.submit(
            who.project_id,
            request.path_params["item_id"],
            reviewer_of(who),
            scores,
            corrected_output=_text(body, "corrected_output") or None,
            comment=_text(body, "comment") or None,
        )
    )
    return item_json(view)


async def _skip(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    await run_in_threadpool(service.skip, who.project_id, request.path_params["item_id"], reviewer_of(who))
    return {"skipped": True}


async def _release(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    released = await run_in_threadpool(
        service.release, who.project_id, request.path_params["item_id"], reviewer_of(who)
    )
    return {"released": released}


# -- what reviews give ------------------------------------------------------------------------------------


async def _agreement(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    report = await run_in_threadpool(service.agreement, who.project_id, request.path_params["config"])
    return report.as_dict()


async def _labels(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    labels, _ = await run_in_threadpool(
        service.calibration_labels, who.project_id, request.path_params["config"]
    )
    text = b"".join(orjson.dumps(row) + b"\n" for row in labels)
    return Response(text, media_type="application/x-ndjson")


async def _to_dataset(request: Request, state: Services, who: Principal, service: ReviewService) -> Any:
    body = await _body(request, state)
    version, created, count = await run_in_threadpool(
        service.send_to_dataset, who.project_id, request.path_params["queue"], _text(body, "dataset")
    )
    return {
        "dataset": _text(body, "dataset"),
        "version": version.version,
        "items": version.item_count,
        "corrected": count,
        "created": created,
    }


routes = [
    Route("/api/review/configs", _guarded(Scope.READ, _list_configs), methods=["GET"]),
    Route("/api/review/configs", _guarded(Scope.ADMIN, _create_config), methods=["POST"]),
    Route("/api/review/configs/{config}/agreement", _guarded(Scope.READ, _agreement), methods=["GET"]),
    Route("/api/review/configs/{config}/labels", _guarded(Scope.READ, _labels), methods=["GET"]),
    Route("/api/review/queues", _guarded(Scope.READ, _list_queues), methods=["GET"]),
    Route("/api/review/queues", _guarded(Scope.ADMIN, _create_queue), methods=["POST"]),
    Route("/api/review/queues/{queue}/items", _guarded(Scope.READ, _list_items), methods=["GET"]),
    Route("/api/review/queues/{queue}/items", _guarded(Scope.READ, _add_items), methods=["POST"]),
    Route("/api/review/queues/{queue}/fill", _guarded(Scope.READ, _fill), methods=["POST"]),
    Route("/api/review/queues/{queue}/next", _guarded(Scope.READ, _next), methods=["POST"]),
    Route("/api/review/queues/{queue}/dataset", _guarded(Scope.READ, _to_dataset), methods=["POST"]),
    Route("/api/review/items/{item_id}", _guarded(Scope.READ, _get_item), methods=["GET"]),
    Route("/api/review/items/{item_id}/scores", _guarded(Scope.READ, _submit), methods=["POST"]),
    Route("/api/review/items/{item_id}/skip", _guarded(Scope.READ, _skip), methods=["POST"]),
    Route("/api/review/items/{item_id}/release", _guarded(Scope.READ, _release), methods=["POST"]),
]
