"""The review pages: queues and score configs, the focused review screen (an item leased to the viewer,
with keyboard shortcuts in app.js), adding traces from the trace list, corrected outputs sent to a
dataset, and agreement (Cohen's kappa) per score config. Every use case is the review service's."""

from __future__ import annotations

import time
from urllib.parse import quote

from starlette.datastructures import QueryParams
from starlette.responses import RedirectResponse, Response

from pilothouse.domain.keys import Scope
from pilothouse.quality.review import (
    Agreement,
    ConfigAgreement,
    ReviewError,
    ReviewNotFound,
    ReviewService,
    ScoreConfig,
    ScoreKind,
)
from pilothouse.server.api import TRACE_FILTERS, trace_query_from_params
from pilothouse.server.errors import ApiError
from pilothouse.ui.web import PageContext, UiError

_FILTERS = TRACE_FILTERS - {"cursor", "limit"}


def _service(page: PageContext) -> ReviewService:
    return ReviewService(page.state.store, page.state.evaluations)


def _back(path: str, message: str, *, error: bool = False) -> Response:
    key = "error" if error else "done"
    return RedirectResponse(f"{path}?{key}={quote(message[:300])}", status_code=303)


def choices(config: ScoreConfig) -> list[tuple[str, str]]:
    """The (value, label) options of a config's control, in shortcut order (1, 2, ...); none for a
    numeric scale too wide for keys (a number box then)."""
    if config.kind is ScoreKind.BOOLEAN:
        return [("true", "yes"), ("false", "no")]
    if config.kind is ScoreKind.CATEGORICAL:
        return [(c, c) for c in config.categories]
    low, high = config.min_value, config.max_value
    if low is not None and high is not None and low == int(low) and high == int(high) and high - low <= 8:
        return [(str(v), str(v)) for v in range(int(low), int(high) + 1)]
    return []


async def home(page: PageContext) -> Response:
    """``/review``: the queues (with what is left in each) and the score configs."""
    service = _service(page)
    queues = await page.run(service.queues, page.project_id)
    configs = await page.run(service.configs, page.project_id)
    return page.render(
        "review.html",
        queues=queues,
        configs=configs,
        done=page.params.get("done"),
        error=page.params.get("error"),
        can_admin=page.viewer.can(Scope.ADMIN),
    )


async def create_config(page: PageContext) -> Response:
    """``POST /review/configs``: a new score config (admin)."""
    page.require(Scope.ADMIN)
    service = _service(page)
    try:
        low, high = _float(page.field("min_value")), _float(page.field("max_value"))
        categories = [c.strip() for c in page.field("categories").split(",") if c.strip()]
        config = await page.run(
            lambda: service.create_config(
                page.project_id,
                page.field("name"),
                page.field("kind"),
                description=page.field("description"),
                min_value=low,
                max_value=high,
                categories=categories,
            )
        )
    except ReviewError as exc:
        return _back("/review", str(exc), error=True)
    return _back("/review", f"Score config {config.name} created.")


def _float(text: str) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ReviewError(f"{text[:40]!r} is not a number") from None


async def create_queue(page: PageContext) -> Response:
    """``POST /review/queues``: a new queue (admin)."""
    page.require(Scope.ADMIN)
    service = _service(page)
    names = [v for v in page.form.getlist("configs") if isinstance(v, str)] if page.form is not None else []
    try:
        per_item = int(page.field("reviews_per_item") or "1")
        queue = await page.run(
            lambda: service.create_queue(
                page.project_id,
                page.field("name"),
                names,
                description=page.field("description"),
                reviews_per_item=per_item,
            )
        )
    except ValueError as exc:
        return _back("/review", str(exc), error=True)
    return _back("/review", f"Queue {queue.name} created.")


async def review_next(page: PageContext) -> Response:
    """``/review/queues/{name}``: the next item for the viewer, leased to them, or word that none is
    left for them."""
    service = _service(page)
    name = str(page.request.path_params["name"])
    try:
        view = await page.run(service.next_item, page.project_id, name, page.viewer.reviewer_name)
    except ReviewNotFound as exc:
        raise UiError(404, str(exc).capitalize() + ".") from None
    queue = await page.run(service.queue, page.project_id, name)
    return page.render(
        "review_item.html",
        queue=queue,
        view=view,
        choices=choices,
        done=page.params.get("done"),
        error=page.params.get("error"),
    )


async def submit(page: PageContext) -> Response:
    """``POST /review/items/{id}``: the viewer's answers (or a skip, or giving the item back); then the
    next item of the queue."""
    service = _service(page)
    item_id = str(page.request.path_params["item_id"])
    try:
        _, queue = await page.run(service.item_and_queue, page.project_id, item_id)
        configs = await page.run(service.queue_configs, queue)
    except ReviewNotFound as exc:
        raise UiError(404, str(exc).capitalize() + ".") from None
    back = f"/review/queues/{quote(queue.name, safe='')}"
    reviewer = page.viewer.reviewer_name
    action = page.field("action") or "submit"
    try:
        if action == "skip":
            await page.run(service.skip, page.project_id, item_id, reviewer)
            return _back(back, "Skipped.")
        if action == "release":
            await page.run(service.release, page.project_id, item_id, reviewer)
            return _back("/review", f"Item given back to {queue.name}.")
        answers = {c.name: page.field(f"score:{c.name}") for c in configs}
        await page.run(
            lambda: service.submit(
                page.project_id,
                item_id,
                reviewer,
                answers,
                corrected_output=page.field("corrected_output") or None,
                comment=page.field("comment") or None,
            )
        )
    except ReviewError as exc:
        return _back(back, str(exc), error=True)
    return _back(back, "Saved.")


async def add_traces(page: PageContext) -> Response:
    """``POST /review/add``: traces ticked in the trace list, or every trace matching its filters
    (``mode=filter``, up to ``limit``), put in a queue."""
    service = _service(page)
    form = page.form
    queue = page.field("queue")
    back = page.field("back") or "/traces"
    back = back if back.startswith("/traces") else "/traces"
    sep = "&" if "?" in back else "?"
    try:
        if page.field("mode") == "filter":
            pairs = [
                (k, v) for k, v in (form.multi_items() if form is not None else []) if k in _FILTERS and v
            ]
            query = trace_query_from_params(
                QueryParams([(k, v) for k, v in pairs if k != "cursor"]), time.time_ns()
            )
            added = await page.run(
                lambda: service.fill_from_filter(
                    page.project_id, queue, query, limit=500, reason="trace list filter"
                )
            )
        else:
            ids = [v for v in form.getlist("trace") if isinstance(v, str)] if form is not None else []
            if not ids:
                raise ReviewError("tick the traces to add first")
            added, _ = await page.run(
                service.add_traces, page.project_id, queue, ids, "picked from the trace list"
            )
    except (ReviewError, ApiError) as exc:
        message = exc.message if isinstance(exc, ApiError) else str(exc)
        return RedirectResponse(f"{back}{sep}review_error={quote(message[:300])}", status_code=303)
    text = f"{added} trace{'s' if added != 1 else ''} added to {queue}"
    return RedirectResponse(f"{back}{sep}review_done={quote(text)}", status_code=303)


async def to_dataset(page: PageContext) -> Response:
    """``POST /review/queues/{name}/dataset``: the queue's corrected outputs as expected answers of a
    new version of a dataset."""
    service = _service(page)
    name = str(page.request.path_params["name"])
    dataset = page.field("dataset")
    try:
        version, created, count = await page.run(service.send_to_dataset, page.project_id, name, dataset)
    except ReviewError as exc:
        return _back("/review", str(exc), error=True)
    state = "new version" if created else "unchanged at version"
    return _back(
        "/review", f"{dataset}: {state} {version.version}, {version.item_count} items ({count} corrected)."
    )


async def agreement(page: PageContext) -> Response:
    """``/review/agreement``: Cohen's kappa per score config, between reviewers and between each
    automated score and the reviewers."""
    service = _service(page)
    configs = await page.run(service.configs, page.project_id)
    reports = [await page.run(service.agreement, page.project_id, c.name) for c in configs[:50]]
    calibrations = {
        c.name: await page.run(service.judge_calibrations, page.project_id, c.name) for c in configs[:50]
    }
    return page.render(
        "review_agreement.html", reports=reports, rows=agreement_rows, calibrations=calibrations
    )


def agreement_rows(report: ConfigAgreement) -> list[tuple[str, Agreement]]:
    """The rows of one config's table: reviewers pooled, each pair of reviewers, each automated source."""
    rows = [("reviewers (all pairs)", report.pooled)]
    rows += [(f"{a.rater_a} vs {a.rater_b}", a) for a in report.reviewers]
    rows += [(f"{a.rater_a} vs reviewers", a) for a in report.automated]
    return rows
