"""The query API under ``/api``: traces, sessions, scores, dashboard metrics. Every read is scoped to
the caller's project; another project's ids answer 404."""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pilothouse.domain.keys import Scope
from pilothouse.domain.money import Money
from pilothouse.domain.queries import SORT_KEYS, InvalidQuery, TraceQuery, decode_cursor, decode_sort_cursor
from pilothouse.domain.scores import DuplicateScoreId, make_score
from pilothouse.domain.timeparse import parse_time_ns
from pilothouse.domain.traces import Status
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse, param_error
from pilothouse.server.gc_pause import paused_gc
from pilothouse.server.serialise import (
    model_metrics_list_json,
    score_json,
    session_json,
    trace_detail_json,
    trace_summary_json,
)
from pilothouse.server.state import Services
from pilothouse.store.search import query_words

_GRANULARITY_S = {"minute": 60, "hour": 3600, "day": 86400}


def _state(request: Request) -> Services:
    state: Services = request.app.state.pilothouse
    return state


_LARGEST_FILTER = 1e12  # a latency (ms) or cost (USD) filter above this matches nothing stored


def _float(params: Any, name: str) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise param_error(name, f"{value[:64]!r} is not a number") from None
    if not 0 <= number <= _LARGEST_FILTER:  # NaN fails both comparisons
        raise param_error(name, f"must be a number from 0 to {_LARGEST_FILTER:g}")
    return number


def _money(params: Any, name: str) -> Money | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        amount = Money.from_usd(value)
    except ValueError:
        raise param_error(name, f"{value[:64]!r} is not an amount of USD") from None
    if not Money(0) <= amount <= Money.from_usd(_LARGEST_FILTER):
        raise param_error(name, f"must be an amount from 0 to {_LARGEST_FILTER:g} USD")
    return amount


def _time(params: Any, name: str, now_ns: int) -> int | None:
    value = params.get(name)
    if not value:
        return None
    try:
        return parse_time_ns(value, now_ns)
    except ValueError as exc:
        raise param_error(name, str(exc)) from None


def _window(params: Any, now_ns: int) -> tuple[int | None, int | None]:
    """The ``from`` and ``to`` parameters (None where absent); 400 when ``to`` is not later."""
    start, end = _time(params, "from", now_ns), _time(params, "to", now_ns)
    if start is not None and end is not None:
        _check_order(params, start, end)
    return start, end


def _bounded_window(params: Any, now_ns: int, default_start: int, default_end: int) -> tuple[int, int]:
    """The ``from`` and ``to`` parameters, with defaults; 400 when the range ends before it starts."""
    start, end = _time(params, "from", now_ns), _time(params, "to", now_ns)
    start = default_start if start is None else start
    end = default_end if end is None else end
    _check_order(params, start, end)
    return start, end


def _check_order(params: Any, start: int, end: int) -> None:
    if end <= start:
        begins = repr(params["from"]) if params.get("from") else "its default start"
        ends = repr(params["to"]) if params.get("to") else "its default end"
        name = "to" if params.get("to") else "from"
        raise param_error(name, f"the time range ends ({ends}) before it starts ({begins})")


TRACE_FILTERS = frozenset(
    {
        "from", "to", "name", "user_id", "session_id", "model", "tag", "status",
        "min_latency_ms", "min_cost_usd", "max_latency_ms", "max_cost_usd", "environment", "release",
        "q", "limit", "cursor", "key_id", "metadata", "score", "min_score", "max_score", "sort", "order",
    }
)  # fmt: skip
MAX_FILTER_CHARS = 1000  # of one filter's value
MAX_FILTER_VALUES = 40  # filters in one query, repeated ones (tag, metadata) counted each time


def _score_bound(params: Any, name: str) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise param_error(name, f"{value[:64]!r} is not a number") from None
    if not -_LARGEST_FILTER <= number <= _LARGEST_FILTER:  # NaN fails both comparisons
        raise param_error(name, f"must be a number from {-_LARGEST_FILTER:g} to {_LARGEST_FILTER:g}")
    return number


def _metadata_filters(params: Any) -> tuple[tuple[str, str], ...]:
    pairs = []
    for text in params.getlist("metadata"):
        key, sep, value = text.partition(":")
        if not sep or not key:
            raise param_error("metadata", f"{text[:64]!r} is not KEY:VALUE")
        if not key.isprintable() or '"' in key or "\\" in key:
            raise param_error("metadata", f"the key {key[:64]!r} has a quote, backslash or control character")
        pairs.append((key, value))
    return tuple(pairs)


def trace_query_from_params(params: Any, now_ns: int) -> TraceQuery:
    """A :class:`TraceQuery` from URL parameters; raises a 400 ApiError naming the bad parameter."""
    unknown = sorted(set(params.keys()) - TRACE_FILTERS)
    if unknown:
        raise param_error(unknown[0][:64], f"unknown filter (known: {', '.join(sorted(TRACE_FILTERS))})")
    items = list(params.multi_items())
    if len(items) > MAX_FILTER_VALUES:
        raise param_error(items[-1][0], f"at most {MAX_FILTER_VALUES} filters in one query")
    for name, value in items:
        if len(value) > MAX_FILTER_CHARS:
            raise param_error(name, f"a filter's value is at most {MAX_FILTER_CHARS} characters")
    status = params.get("status")
    if status is not None and status not in ("ok", "error"):
        raise param_error("status", "must be 'ok' or 'error'")
    limit_text = params.get("limit", "50")
    if not limit_text.isdigit():
        raise param_error("limit", f"{limit_text!r} is not a whole number")
    sort = params.get("sort") or "time"
    if sort not in SORT_KEYS:
        raise param_error("sort", f"{sort[:64]!r} is no sort key (known: {', '.join(SORT_KEYS)})")
    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise param_error("order", "must be 'asc' or 'desc'")
    cursor = params.get("cursor")
    start_ns, end_ns = _window(params, now_ns)
    search = params.get("q") or None
    try:
        if search is not None:
            query_words(search)
    except InvalidQuery as exc:
        raise param_error("q", str(exc)) from None
    try:
        position: Any = None
        if cursor:
            position = decode_cursor(cursor) if sort == "time" else decode_sort_cursor(cursor, sort)
        return TraceQuery(
            start_ns=start_ns,
            end_ns=end_ns,
            name=params.get("name"),
            user_id=params.get("user_id"),
            session_id=params.get("session_id"),
            model=params.get("model"),
            tags=tuple(params.getlist("tag")),
            status=Status(status) if status else None,
            min_latency_ms=_float(params, "min_latency_ms"),
            min_cost_usd=_money(params, "min_cost_usd"),
            max_latency_ms=_float(params, "max_latency_ms"),
            max_cost_usd=_money(params, "max_cost_usd"),
            environment=params.get("environment"),
            release=params.get("release"),
            search=search,
            limit=int(limit_text),
            cursor=position,
            key_id=params.get("key_id") or None,
            metadata=_metadata_filters(params),
            score_name=params.get("score") or None,
            min_score=_score_bound(params, "min_score"),
            max_score=_score_bound(params, "max_score"),
            sort=sort,
            descending=order == "desc",
        )
    except InvalidQuery as exc:
        message = str(exc)
        name = exc.param or next(
            (n for n in ("cursor", "limit", "score", "metadata", "tag") if n in message),
            "limit",
        )
        raise param_error(name, message) from None


async def list_traces(request: Request) -> Response:
    """``GET /api/traces``: newest first, filtered, ``{"data": [...], "next": cursor}``."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    query = trace_query_from_params(request.query_params, time.time_ns())
    page = await run_in_threadpool(state.store.list_traces, principal.project_id, query)
    return FastJSONResponse({"data": [trace_summary_json(t) for t in page.data], "next": page.next_cursor})


async def get_trace(request: Request) -> Response:
    """``GET /api/traces/{id}``: the trace, its observations depth-first, its scores."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    trace_id = request.path_params["trace_id"].lower()
    detail = await run_in_threadpool(state.store.get_trace, principal.project_id, trace_id)
    if detail is None:
        raise ApiError(404, f"No trace {trace_id!r} in this project.", code="trace_not_found")
    return FastJSONResponse(trace_detail_json(detail))


async def post_scores(request: Request) -> Response:
    """``POST /api/scores``: one score object or a list of them, on traces of the caller's project. A
    key that sends traces (``ingest``: the SDK's ``pilothouse.score``) may send scores, as may the web
    UI's users (``read``). Each score's ``author`` is the caller (``key:NAME`` or ``admin``); a
    ``human`` score sent here is never a review (agreement and calibration read the review tables)."""
    state = _state(request)
    principal = await state.auth.authenticate(request, (Scope.INGEST, Scope.READ))
    body = await read_json(request, state.settings.max_body_bytes, state.body_budget)
    items = body if isinstance(body, list) else [body]
    scores = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, f"Score #{index} must be a JSON object.", code="invalid_score")
        allowed = {"id", "trace_id", "observation_id", "name", "value", "data_type", "source", "comment"}
        extra = sorted(set(item) - allowed)
        if extra:
            raise ApiError(400, f"Score #{index}: unknown field {extra[0]!r}.", code="invalid_score")
        try:
            score = make_score(
                trace_id=str(item.get("trace_id") or "").lower(),
                name=item.get("name", ""),
                value=item.get("value"),
                data_type=item.get("data_type"),
                observation_id=item.get("observation_id"),
                source=item.get("source", "human"),
                comment=item.get("comment"),
                score_id=item.get("id"),
                author=principal.identity,  # who sent it, whatever the body says
            )
        except ValueError as exc:
            raise ApiError(400, f"Score #{index}: {exc}.", code="invalid_score") from None
        exists = await run_in_threadpool(
            state.store.observation_exists, principal.project_id, score.trace_id, score.observation_id
        )
        if not exists:
            what = "observation" if score.observation_id else "trace"
            raise ApiError(404, f"Score #{index}: no such {what} in this project.", code=f"{what}_not_found")
        scores.append(score)
    try:
        await run_in_threadpool(state.store.add_scores, principal.project_id, scores)
    except DuplicateScoreId as exc:
        raise ApiError(
            409,
            f"This project already has a score with id {str(exc)!r}.",
            code="duplicate_score_id",
            param="id",
        ) from None
    data = [score_json(s) for s in scores]
    return FastJSONResponse(data if isinstance(body, list) else data[0], status_code=201)


async def list_sessions(request: Request) -> Response:
    """``GET /api/sessions?from=30d``: conversations active in the window, most recently active first."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    params = request.query_params
    limit_text = params.get("limit", "50")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 500:
        raise param_error("limit", "must be a whole number from 1 to 500")
    try:
        cursor = decode_cursor(params["cursor"]) if params.get("cursor") else None
    except InvalidQuery as exc:
        raise param_error("cursor", str(exc)) from None
    now_ns = time.time_ns()
    # sessions active in a window (default the last 30 days): a bounded read at any store size
    start_ns, end_ns = _bounded_window(params, now_ns, now_ns - 30 * 24 * 3600 * 10**9, now_ns + 60 * 10**9)
    page = await run_in_threadpool(
        state.store.list_sessions, principal.project_id, int(limit_text), cursor, start_ns, end_ns
    )
    return FastJSONResponse({"data": [session_json(s) for s in page.data], "next": page.next_cursor})


async def model_metrics(request: Request) -> Response:
    """``GET /api/metrics/models?from=30d&granularity=hour``: per-bucket, per-model figures."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    params = request.query_params
    now_ns = time.time_ns()
    start_ns, end_ns = _bounded_window(params, now_ns, now_ns - 24 * 3600 * 10**9, now_ns + 60 * 10**9)
    granularity = params.get("granularity", "hour")
    if granularity not in _GRANULARITY_S:
        raise param_error("granularity", "must be minute, hour or day")

    def rows() -> list[dict[str, Any]]:
        with paused_gc():  # thousands of rows, all kept until the reply (python benchmarks/query.py)
            metrics = state.store.model_metrics(
                principal.project_id, start_ns // 10**9, end_ns // 10**9, _GRANULARITY_S[granularity]
            )
            return model_metrics_list_json(metrics)

    return FastJSONResponse({"data": await run_in_threadpool(rows)})


routes = [
    Route("/api/traces", list_traces, methods=["GET"]),
    Route("/api/traces/{trace_id}", get_trace, methods=["GET"]),
    Route("/api/scores", post_scores, methods=["POST"]),
    Route("/api/sessions", list_sessions, methods=["GET"]),
    Route("/api/metrics/models", model_metrics, methods=["GET"]),
]
