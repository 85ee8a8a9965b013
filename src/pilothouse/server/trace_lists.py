"""The trace list's own API: export of a filtered list (CSV, JSONL; streamed, bounded), bulk actions on
chosen traces (add to a dataset, add a score, send to a review queue) and saved views. The UI's trace
list calls the same functions (``export_lines``, ``bulk``). Every call is scoped to the caller's project:
another project's trace ids are "no trace here" and another project's views do not exist."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pilothouse.domain.datasets import DatasetError
from pilothouse.domain.keys import Scope
from pilothouse.domain.queries import TraceQuery, TraceSummary, next_page
from pilothouse.domain.scores import make_score
from pilothouse.domain.spreadsheet import escape_formula
from pilothouse.domain.timeparse import iso
from pilothouse.quality.review import ReviewError, ReviewService
from pilothouse.server.api import trace_query_from_params
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse, param_error
from pilothouse.server.serialise import json_default, trace_summary_json
from pilothouse.server.state import Services
from pilothouse.store.evals import EvalStore
from pilothouse.store.review import ReviewStore
from pilothouse.store.sql import SqlStore
from pilothouse.store.views import ViewError, ViewStore

MAX_EXPORT_ROWS = 100_000  # one export's most rows (max_rows lowers it)
EXPORT_PAGE = 500
MAX_BULK_TRACES = 1000
EXPORT_FORMATS = ("csv", "jsonl")
CSV_COLUMNS = (
    "id", "timestamp", "name", "user_id", "session_id", "model", "environment", "release", "status",
    "latency_ms", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "tags", "input", "output",
)  # fmt: skip


def _state(request: Request) -> Services:
    state: Services = request.app.state.pilothouse
    return state


def export_query(params: QueryParams, now_ns: int) -> tuple[TraceQuery, str, int]:
    """(the filters, the format, the most rows) of an export's query string; a 400 ApiError for a bad one."""
    fmt = params.get("format") or "csv"
    if fmt not in EXPORT_FORMATS:
        raise param_error("format", f"must be one of {', '.join(EXPORT_FORMATS)}")
    max_text = params.get("max_rows") or str(MAX_EXPORT_ROWS)
    if not max_text.isdigit() or not 1 <= int(max_text) <= MAX_EXPORT_ROWS:
        raise param_error("max_rows", f"must be a whole number from 1 to {MAX_EXPORT_ROWS:,}")
    rest = [(k, v) for k, v in params.multi_items() if k not in ("format", "max_rows", "limit", "cursor")]
    query = trace_query_from_params(QueryParams(rest), now_ns)
    fields = {f: getattr(query, f) for f in TraceQuery.__dataclass_fields__}
    return TraceQuery(**{**fields, "limit": EXPORT_PAGE}), fmt, int(max_text)


def export_pages(
    store: SqlStore, project_id: str, query: TraceQuery, max_rows: int
) -> Iterator[list[TraceSummary]]:
    """The filtered list a page at a time, at most ``max_rows`` rows in all."""
    sent = 0
    page: TraceQuery | None = query
    while page is not None and sent < max_rows:
        found = store.list_traces(project_id, page)
        rows = found.data[: max_rows - sent]
        sent += len(rows)
        yield rows
        page = next_page(page, found.next_cursor) if found.next_cursor else None


def csv_header() -> str:
    out = io.StringIO()
    csv.writer(out).writerow(CSV_COLUMNS)
    return out.getvalue()


def csv_rows(rows: Sequence[TraceSummary]) -> str:
    """CSV lines of trace rows; a cell a spreadsheet would run as a formula is quoted (``escape_formula``)."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        tr = row.trace
        cells: list[Any] = [
            tr.id, iso(tr.start_ns), tr.name, tr.user_id, tr.session_id, tr.model, tr.environment,
            tr.release, tr.status.value, round(tr.latency_ms, 3), tr.usage.input, tr.usage.output,
            tr.usage.total, "" if tr.cost_usd is None else str(tr.cost_usd.usd), " ".join(tr.tags),
            row.input_preview, row.output_preview,
        ]  # fmt: skip
        writer.writerow(["" if c is None else escape_formula(c) for c in cells])
    return out.getvalue()


def jsonl_rows(rows: Sequence[TraceSummary]) -> bytes:
    return b"".join(orjson.dumps(trace_summary_json(r), default=json_default) + b"\n" for r in rows)


async def export_stream(
    store: SqlStore, project_id: str, query: TraceQuery, fmt: str, max_rows: int
) -> AsyncIterator[bytes]:
    """The export's bytes; each page is read off the event loop."""
    pages = export_pages(store, project_id, query, max_rows)
    if fmt == "csv":
        yield csv_header().encode()
    while True:
        rows = await run_in_threadpool(next, pages, None)
        if rows is None:
            return
        yield csv_rows(rows).encode() if fmt == "csv" else jsonl_rows(rows)


def export_response(store: SqlStore, project_id: str, query: TraceQuery, fmt: str, max_rows: int) -> Response:
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(
        export_stream(store, project_id, query, fmt, max_rows),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="traces.{fmt}"'},
    )


async def export_traces(request: Request) -> Response:
    """``GET /api/traces/export?format=csv|jsonl&max_rows=N&<filters>``: the filtered list, streamed."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    query, fmt, max_rows = export_query(request.query_params, time.time_ns())
    return export_response(state.store, principal.project_id, query, fmt, max_rows)


# -- bulk actions ---------------------------------------------------------------------------------------


class BulkError(ValueError):
    """A bulk action that cannot be done; the message says why (nothing was changed)."""


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk action did: how many traces it changed, and a sentence for people."""

    done: int
    message: str


def trace_ids_of(value: Any) -> list[str]:
    """The distinct trace ids of a request (a list of 1 to MAX_BULK_TRACES strings)."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BulkError(f"give trace_ids: a list of 1 to {MAX_BULK_TRACES:,} trace ids")
    ids = list(dict.fromkeys(v.strip().lower() for v in value))
    if len(ids) > MAX_BULK_TRACES:
        raise BulkError(f"at most {MAX_BULK_TRACES} traces at once")
    if any(not v or len(v) > 64 for v in ids):
        raise BulkError("a trace id is 1 to 64 characters")
    return ids


def bulk(
    state: Services,
    project_id: str,
    action: str,
    ids: Sequence[str],
    options: dict[str, Any],
    author: str | None = None,
) -> BulkResult:
    """Run one bulk action on traces of ``project_id``; BulkError if any id is no trace of it (nothing
    is changed then) or an option is bad. ``author`` (who asks) is recorded on the scores it writes."""
    stored = ReviewStore(state.store).existing_traces(project_id, list(ids))
    missing = [i for i in ids if i not in stored]
    if missing:
        raise BulkError(
            f"{len(missing)} of the {len(ids)} traces {'is' if len(missing) == 1 else 'are'} not in this "
            f"project (first: {missing[0][:64]!r})"
        )
    if action == "dataset":
        return _to_dataset(state.store, project_id, str(options.get("dataset") or ""), ids)
    if action == "score":
        return _score(state.store, project_id, ids, options, author)
    if action == "review":
        queue = str(options.get("queue") or "")
        try:
            added, _ = ReviewService(state.store, state.evaluations).add_traces(
                project_id, queue, list(ids), str(options.get("reason") or "bulk action"), source="manual"
            )
        except ReviewError as exc:
            raise BulkError(str(exc)) from None
        return BulkResult(
            added, f"{_traces(added)} added to {queue}" if added else f"every trace is in {queue} already"
        )
    raise BulkError("action must be one of dataset, score, review")


def _to_dataset(store: SqlStore, project_id: str, name: str, ids: Sequence[str]) -> BulkResult:
    if not name or len(name) > 200:
        raise BulkError("give the dataset a name (up to 200 characters)")
    evals = EvalStore(store)
    items = evals.trace_items(project_id, ids)
    latest = evals.get_version(project_id, name)
    present: set[str] = set()
    if latest is not None:
        present = set(evals.get_items(latest.id, list(items)))
    new = [items[i] for i in ids if i in items and i not in present]
    if not new:
        return BulkResult(0, f"every trace is in {name} already")
    existing = (i for _, i in evals.iter_items(latest.id)) if latest is not None else iter(())
    try:
        version, _ = evals.import_items(
            project_id, name, [*existing, *new], source=f"bulk: {len(new)} traces"
        )
    except DatasetError as exc:
        raise BulkError(str(exc)) from None
    return BulkResult(
        len(new),
        f"{_traces(len(new))} added to {name} (now v{version.version}, "
        f"{version.item_count} item{'s' if version.item_count != 1 else ''})",
    )


def _score(
    store: SqlStore, project_id: str, ids: Sequence[str], options: dict[str, Any], author: str | None
) -> BulkResult:
    name, value = options.get("name"), options.get("value")
    data_type = options.get("data_type") or "numeric"
    comment = options.get("comment")
    if not isinstance(name, str) or (comment is not None and not isinstance(comment, str)):
        raise BulkError("a score needs a name (text) and may have a comment (text)")
    try:
        scores = [
            make_score(
                trace_id=trace_id,
                name=name,
                value=value,
                data_type=data_type,
                source="human",
                comment=comment or None,
                author=author,
            )
            for trace_id in ids
        ]
    except ValueError as exc:
        raise BulkError(f"score: {exc}") from None
    store.add_scores(project_id, scores)
    return BulkResult(len(scores), f"score {name} added to {_traces(len(scores))}")


def _traces(count: int) -> str:
    """``1 trace``, ``2 traces``."""
    return f"{count:,} trace{'s' if count != 1 else ''}"


async def bulk_action(request: Request) -> Response:
    """``POST /api/traces/bulk`` ``{"action": "dataset"|"score"|"review", "trace_ids": [...], ...}``:
    ``dataset`` (a name), ``score`` (``name``, ``value``, ``data_type``, ``comment``) or ``queue``
    (and ``reason``)."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    body = await read_json(request, state.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.", code="invalid_body")
    action = body.get("action")
    try:
        if action not in ("dataset", "score", "review"):
            raise BulkError("'action' must be one of dataset, score, review")
        ids = trace_ids_of(body.get("trace_ids"))
        options = body.get("score") if action == "score" else body
        if not isinstance(options, dict):
            raise BulkError("score must be an object with name and value")
        result = await run_in_threadpool(
            bulk, state, principal.project_id, str(action), ids, options, principal.identity
        )
    except BulkError as exc:
        raise ApiError(400, _sentence(str(exc)), code="invalid_bulk_action") from None
    return FastJSONResponse({"action": action, "done": result.done, "message": result.message})


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


# -- saved views ------------------------------------------------------------------------------------------


def view_query(text: str) -> str:
    """A view's query string, checked as the list's filters (a 400 ApiError when it is not), without a
    cursor."""
    params = QueryParams(text.lstrip("?"))
    kept = [(k, v) for k, v in params.multi_items() if k != "cursor" and v]
    trace_query_from_params(QueryParams(kept), time.time_ns())
    return str(QueryParams(kept))


async def list_views(request: Request) -> Response:
    """``GET /api/views``: the project's saved views of the trace list."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    views = await run_in_threadpool(ViewStore(state.store).list, principal.project_id)
    return FastJSONResponse(
        {"data": [{"name": v.name, "query": v.query, "created_at": iso(v.created_ns)} for v in views]}
    )


async def save_view(request: Request) -> Response:
    """``POST /api/views`` ``{"name": ..., "query": "status=error&tag=x"}``: save (or replace) a view."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    body = await read_json(request, state.settings.max_body_bytes)
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("name"), str)
        or not isinstance(body.get("query"), str)
    ):
        raise ApiError(400, 'The body must be {"name": text, "query": text}.', code="invalid_body")
    query = view_query(body["query"])
    try:
        view = await run_in_threadpool(ViewStore(state.store).save, principal.project_id, body["name"], query)
    except ViewError as exc:
        raise ApiError(400, _sentence(str(exc)), code="invalid_view") from None
    return FastJSONResponse(
        {"name": view.name, "query": view.query, "created_at": iso(view.created_ns)}, status_code=201
    )


async def delete_view(request: Request) -> Response:
    """``DELETE /api/views/{name}``."""
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.READ)
    name = str(request.path_params["name"])
    if not await run_in_threadpool(ViewStore(state.store).delete, principal.project_id, name):
        raise ApiError(404, f"No view {name[:100]!r} in this project.", code="view_not_found")
    return Response(status_code=204)


routes = [
    Route("/api/traces/export", export_traces, methods=["GET"]),
    Route("/api/traces/bulk", bulk_action, methods=["POST"]),
    Route("/api/views", list_views, methods=["GET"]),
    Route("/api/views", save_view, methods=["POST"]),
    Route("/api/views/{name}", delete_view, methods=["DELETE"]),
]
