"""Trace pages: the explorer (filters in the URL, keyset pages), a trace with its observation tree,
waterfall and chat messages (add a score, add to a dataset), sessions as conversations, end users."""

from __future__ import annotations

import time
from itertools import chain
from typing import Any
from urllib.parse import quote

import orjson
from starlette.datastructures import QueryParams
from starlette.responses import RedirectResponse, Response

from pilothouse.domain.datasets import DatasetError, DatasetItem
from pilothouse.domain.money import Money
from pilothouse.domain.queries import (
    InvalidQuery,
    TraceQuery,
    TraceSummary,
    decode_cursor,
)
from pilothouse.domain.scores import make_score
from pilothouse.domain.traces import Observation
from pilothouse.server.api import trace_query_from_params
from pilothouse.server.errors import ApiError
from pilothouse.server.trace_lists import (
    BulkError,
    bulk,
    export_query,
    export_response,
    trace_ids_of,
    view_query,
)
from pilothouse.store.evals import EvalStore
from pilothouse.store.review import ReviewStore
from pilothouse.store.trace_view import TraceOutline, TraceViewQueries
from pilothouse.store.views import ViewError, ViewStore
from pilothouse.ui import analytics as an
from pilothouse.ui.web import PageContext, UiError, not_found

PAGE_SIZE = 50
USERS_PAGE_SIZE = 25  # each user's sums read their traces of the range: fewer rows keep 30 days fast


def _filter_params(page: PageContext) -> list[tuple[str, str]]:
    """The URL's filters without empty fields (a submitted form sends every field)."""
    return [(k, v.strip()) for k, v in page.params.multi_items() if v.strip() and not k.startswith("review_")]


async def traces(page: PageContext) -> Response:
    """``/traces``: the filtered, searchable, sortable trace list, one keyset page at a time, with the
    project's saved views, export links and bulk actions on ticked traces."""
    params = _filter_params(page)
    error = None
    rows: list[TraceSummary] = []
    next_cursor = None
    try:
        query = trace_query_from_params(QueryParams(params), time.time_ns())
        if query.limit > 100:
            raise ApiError(400, "Invalid query parameter 'limit': at most 100 rows per page here.")
        result = await page.run(page.state.store.list_traces, page.project_id, query)
        rows, next_cursor = result.data, result.next_cursor
    except ApiError as exc:
        error = exc.message
    scores = await page.run(page.queries.scores_for_traces, page.project_id, [r.trace.id for r in rows])
    repeated = ("cursor", "tag", "metadata")
    filters = {k: v for k, v in params if k not in repeated}
    view_params = [(k, v) for k, v in params if k != "cursor"]
    return page.render(
        "traces.html",
        status=400 if error else 200,
        rows=rows,
        scores=scores,
        next_cursor=next_cursor,
        error=error,
        filters=filters,
        tags=[v for k, v in params if k == "tag"],
        metadata=[v for k, v in params if k == "metadata"],
        paged="cursor" in dict(params),
        sort=filters.get("sort", "time"),
        order=filters.get("order", "desc"),
        view_query=str(QueryParams(view_params)),
        views=await page.run(ViewStore(page.state.store).list, page.project_id),
        review_queues=await page.run(ReviewStore(page.state.store).queue_names, page.project_id),
        review_done=page.params.get("review_done"),
        review_error=page.params.get("review_error"),
    )


def _back_to_list(page: PageContext) -> str:
    back = page.field("back") or "/traces"
    return back if back.startswith("/traces") and not back.startswith("//") else "/traces"


def _redirect(back: str, key: str, message: str) -> Response:
    sep = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{sep}{key}={quote(message[:300])}", status_code=303)


async def export(page: PageContext) -> Response:
    """``/traces/export?format=csv|jsonl&<filters>``: the filtered list as a file, streamed."""
    params = QueryParams([(k, v) for k, v in _filter_params(page)])
    try:
        query, fmt, max_rows = export_query(params, time.time_ns())
    except ApiError as exc:
        raise UiError(400, exc.message) from None
    return export_response(page.state.store, page.project_id, query, fmt, max_rows)


async def bulk_action(page: PageContext) -> Response:
    """``POST /traces/bulk``: the ticked traces to a dataset, a score on each, or to a review queue."""
    back = _back_to_list(page)
    form = page.form
    ids = [v for v in form.getlist("trace") if isinstance(v, str)] if form is not None else []
    action = page.field("action")
    options: dict[str, Any] = {"dataset": page.field("dataset"), "queue": page.field("queue")}
    try:
        if not ids:
            raise BulkError("tick the traces first")
        if action == "score":
            data_type = page.field("score_type", "numeric")
            if data_type not in ("numeric", "boolean", "categorical"):
                raise BulkError("the data type must be numeric, boolean or categorical")
            try:
                value = _score_value(data_type, page.field("score_value"))
            except ValueError as exc:
                raise BulkError(f"score: {exc}") from None
            options = {"name": page.field("score_name"), "value": value, "data_type": data_type}
        elif action == "review":
            options["reason"] = "picked from the trace list"
        result = await page.run(
            bulk, page.state, page.project_id, action, trace_ids_of(ids), options, page.viewer.reviewer_name
        )
    except BulkError as exc:
        return _redirect(back, "review_error", str(exc))
    return _redirect(back, "review_done", result.message)


async def save_view(page: PageContext) -> Response:
    """``POST /traces/views``: the list's current filters saved under a name."""
    query = page.field("query")
    try:
        checked = view_query(query)
        view = await page.run(ViewStore(page.state.store).save, page.project_id, page.field("name"), checked)
    except ApiError as exc:
        return _redirect("/traces", "review_error", f"View not saved: {exc.message}")
    except ViewError as exc:
        return _redirect(
            f"/traces?{query}" if query else "/traces", "review_error", f"View not saved: {exc}."
        )
    target = f"/traces?{view.query}" if view.query else "/traces"
    return _redirect(target, "review_done", f"Saved the view {view.name}.")


async def delete_view(page: PageContext) -> Response:
    """``POST /traces/views/delete``: forget a saved view."""
    name = page.field("name")
    deleted = await page.run(ViewStore(page.state.store).delete, page.project_id, name)
    if not deleted:
        raise not_found(f"view {name!r}")
    return _redirect("/traces", "review_done", f"Deleted the view {name}.")


def _attempts(o: Observation) -> list[dict[str, Any]]:
    value = o.attributes.get("gateway.attempts")
    return [a for a in value if isinstance(a, dict)] if isinstance(value, list) else []


def _extra_attributes(o: Observation) -> dict[str, Any]:
    hidden = {"gateway.attempts", "gen_ai.request.tools"}
    return {k: v for k, v in o.attributes.items() if k not in hidden}


def outline_json(outline: TraceOutline) -> str:
    """The tree's data, compact: tables of names, kinds and models, then one row per span in start
    order: ``[id, parent index (-1: a root), name, kind, start us, duration us, failed, model, tokens]``
    (name, kind and model as indexes into the tables). Safe inside ``<script type="application/json">``."""
    spans = outline.spans
    index = {s[0]: i for i, s in enumerate(spans)}
    start = min((s[4] for s in spans), default=outline.trace.start_ns)
    end = max((s[5] for s in spans), default=outline.trace.end_ns)
    names: dict[str, int] = {}
    kinds: dict[str, int] = {}
    models: dict[str | None, int] = {None: -1}
    rows = []
    for span_id, parent_id, kind, name, begin, finish, status, model, tokens in spans:
        model_at = models.get(model)
        if model_at is None:
            model_at = models[model] = len(models) - 1
        rows.append(
            (
                span_id,
                index.get(parent_id, -1) if parent_id else -1,
                names.setdefault(name, len(names)),
                kinds.setdefault(kind, len(kinds)),
                max(0, begin - start) // 1000,
                max(0, finish - begin) // 1000,
                1 if status == "error" else 0,
                model_at,
                tokens,
            )
        )
    data = {
        "trace": outline.trace.id,
        "total_us": max(1, (end - start) // 1000),
        "names": list(names),
        "kinds": list(kinds),
        "models": [m for m in models if m is not None],
        "spans": rows,
    }
    # "<" escaped: no text of a span can close the script element
    return orjson.dumps(data).decode().replace("<", "\\u003c")


def _selected(outline: TraceOutline, wanted: str | None) -> str | None:
    """The span to show first: the one the URL names, else the first root."""
    ids = {s[0] for s in outline.spans}
    if wanted and wanted in ids:
        return wanted
    root = outline.root_span_id
    if root is not None and root in ids:
        return root
    return next((s[0] for s in outline.spans if s[1] not in ids), None)


def span_context(o: Observation, trace_start_ns: int, scores: list[Any]) -> dict[str, Any]:
    """What the span detail template needs of one span."""
    return {
        "o": o,
        "offset_ms": (o.start_ns - trace_start_ns) / 1e6,
        "attempts": _attempts(o),
        "attributes": _extra_attributes(o),
        "tools": o.attributes.get("gen_ai.request.tools"),
        "is_call": o.kind.is_model_call or not o.usage.is_empty,
        "span_scores": [s for s in scores if s.observation_id == o.id],
    }


async def _trace_page(page: PageContext, trace_id: str, status: int = 200, **extra: Any) -> Response:
    view = TraceViewQueries(page.state.store)
    outline = await page.run(view.outline, page.project_id, trace_id)
    if outline is None:
        raise not_found(f"trace {trace_id!r}")
    wanted = extra.get("score_form", {}).get("observation_id") or page.params.get("span")
    selected_id = _selected(outline, wanted)
    selected = None
    if selected_id is not None:
        found = await page.run(view.observation, page.project_id, trace_id, selected_id)
        if found is not None:
            selected = span_context(found, outline.trace.start_ns, outline.scores)
    datasets = await page.run(EvalStore(page.state.store).list_datasets, page.project_id)
    online = page.state.online
    online_items = [] if online is None else await page.run(online.trace_results, page.project_id, trace_id)
    return page.render(
        "trace.html",
        status=status,
        trace=outline.trace,
        outline=outline_json(outline),
        span_count=len(outline.spans),
        selected=selected,
        older=outline.older,
        newer=outline.newer,
        scores=outline.scores,
        online_items=online_items,
        datasets=[d.name for d in datasets],
        **{"score_error": None, "score_form": {}, "dataset_error": None, "dataset_done": None, **extra},
    )


def _trace_id(page: PageContext) -> str:
    return str(page.request.path_params["trace_id"]).lower()


async def trace(page: PageContext) -> Response:
    """``/traces/{id}``: the span tree beside the selected span (``?span=ID``, else the root)."""
    return await _trace_page(page, _trace_id(page), dataset_done=page.params.get("added"))


async def span(page: PageContext) -> Response:
    """``/traces/{id}/spans/{span_id}``: one span's detail, the fragment the tree loads on selection."""
    trace_id = _trace_id(page)
    span_id = str(page.request.path_params["span_id"]).lower()
    view = TraceViewQueries(page.state.store)
    found = await page.run(view.observation, page.project_id, trace_id, span_id)
    if found is None:
        raise not_found(f"span {span_id!r} of trace {trace_id!r}")
    detail = await page.run(view.trace_start_and_scores, page.project_id, trace_id)
    start_ns, scores = detail
    return page.render("_span.html", trace_id=trace_id, selected=span_context(found, start_ns, scores))


def _score_value(data_type: str, text: str) -> Any:
    if data_type == "numeric":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if data_type == "boolean":
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "pass"):
            return True
        if lowered in ("false", "0", "no", "fail"):
            return False
        raise ValueError("a boolean score is true or false")
    return text


async def add_score(page: PageContext) -> Response:
    """``POST /traces/{id}/scores``: a human score or comment on the trace or one observation."""
    trace_id = _trace_id(page)
    data_type = page.field("data_type", "numeric")
    observation_id = page.field("observation_id") or None
    try:
        if data_type not in ("numeric", "boolean", "categorical"):
            raise ValueError("the data type must be numeric, boolean or categorical")
        score = make_score(
            trace_id=trace_id,
            name=page.field("name"),
            value=_score_value(data_type, page.field("value")),
            data_type=data_type,
            observation_id=observation_id,
            source="human",
            comment=page.field("comment") or None,
            author=page.viewer.reviewer_name,
        )
    except ValueError as exc:
        exists = await page.run(page.state.store.observation_exists, page.project_id, trace_id, None)
        if not exists:
            raise not_found(f"trace {trace_id!r}") from None
        typed = {k: page.field(k) for k in ("name", "data_type", "value", "observation_id", "comment")}
        return await _trace_page(
            page, trace_id, status=400, score_error=f"Score not added: {exc}.", score_form=typed
        )
    exists = await page.run(page.state.store.observation_exists, page.project_id, trace_id, observation_id)
    if not exists:
        raise not_found(
            f"trace {trace_id!r}" if observation_id is None else f"observation {observation_id!r}"
        )
    await page.run(page.state.store.add_scores, page.project_id, [score])
    on = f"?span={quote(observation_id)}" if observation_id else ""
    return RedirectResponse(f"/traces/{trace_id}{on}#scores", status_code=303)


def _trace_item(store: EvalStore, project_id: str, trace_id: str, start_ns: int) -> DatasetItem | None:
    # the curation path of `pilothouse datasets from-traces`, narrowed to this trace's start time
    query = TraceQuery(start_ns=start_ns, end_ns=start_ns + 1, limit=500)
    return next((i for i in store.iter_trace_items(project_id, query) if i.id == trace_id), None)


def _append_item(store: EvalStore, project_id: str, name: str, item: DatasetItem) -> str:
    latest = store.get_version(project_id, name)
    if latest is not None and store.get_items(latest.id, [item.id]):
        return f"This trace is already in {name} v{latest.version}."
    existing = (i for _, i in store.iter_items(latest.id)) if latest is not None else iter(())
    version, _ = store.import_items(project_id, name, chain(existing, [item]), source=f"ui: trace {item.id}")
    return f"Added to {name} (now v{version.version}, {version.item_count} items)."


async def add_to_dataset(page: PageContext) -> Response:
    """``POST /traces/{id}/dataset``: the trace as an item of a dataset (a new version of it)."""
    trace_id = _trace_id(page)
    name = page.field("dataset")
    detail = await page.run(page.state.store.get_trace, page.project_id, trace_id)
    if detail is None:
        raise not_found(f"trace {trace_id!r}")
    if not name or len(name) > 200:
        return await _trace_page(
            page, trace_id, status=400, dataset_error="Give the dataset a name (up to 200 characters)."
        )
    evals = EvalStore(page.state.store)
    item = await page.run(_trace_item, evals, page.project_id, trace_id, detail.trace.start_ns)
    if item is None:
        raise not_found(f"trace {trace_id!r}")
    try:
        message = await page.run(_append_item, evals, page.project_id, name, item)
    except DatasetError as exc:
        return await _trace_page(page, trace_id, status=400, dataset_error=f"Not added: {exc}.")
    return RedirectResponse(f"/traces/{trace_id}?added={quote(message)}#dataset", status_code=303)


def _cursor(page: PageContext) -> tuple[int, str] | None:
    text = page.params.get("cursor")
    if not text:
        return None
    try:
        return decode_cursor(text)
    except InvalidQuery as exc:
        raise UiError(400, f"Invalid query parameter 'cursor': {exc}") from None


def _window(page: PageContext, default: str) -> an.Window:
    try:
        return an.window(page.params.get("range"), default)
    except an.InvalidRange as exc:
        raise UiError(400, str(exc)) from None


async def sessions(page: PageContext) -> Response:
    """``/sessions``: sessions active in the range, most recent first."""
    win = _window(page, "7d")
    result = await page.run(
        page.queries.active_sessions, page.project_id, win.start_ns, win.end_ns, PAGE_SIZE, _cursor(page)
    )
    return page.render(
        "sessions.html", win=win, ranges=list(an.RANGES), rows=result.data, next_cursor=result.next_cursor
    )


async def session(page: PageContext) -> Response:
    """``/sessions/{id}``: the session's traces as a conversation, oldest first."""
    session_id = str(page.request.path_params["session_id"])
    traces_, more = await page.run(page.queries.session_traces, page.project_id, session_id, 100)
    if not traces_:
        raise not_found(f"session {session_id!r}")
    scores = await page.run(page.queries.scores_for_traces, page.project_id, [t.id for t in traces_])
    return page.render(
        "session.html",
        session_id=session_id,
        traces=traces_,
        more=more,
        scores=scores,
        cost=Money.sum(t.cost_usd for t in traces_ if t.cost_usd is not None),
        tokens=sum(t.usage.total for t in traces_),
    )


async def users(page: PageContext) -> Response:
    """``/users``: end users active in the range with their usage and cost there."""
    win = _window(page, "7d")
    result = await page.run(
        page.queries.active_users, page.project_id, win.start_ns, win.end_ns, USERS_PAGE_SIZE, _cursor(page)
    )
    return page.render(
        "users.html", win=win, ranges=list(an.RANGES), rows=result.data, next_cursor=result.next_cursor
    )
