"""The UI's routes: pages, form posts, login and the vendored static files."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pilothouse.config import Settings
from pilothouse.server.errors import UNKNOWN_PATH_ROUTE
from pilothouse.ui import (
    pages_admin,
    pages_eval_item,
    pages_evals,
    pages_monitors,
    pages_online,
    pages_overview,
    pages_prompts,
    pages_review,
    pages_traces,
)
from pilothouse.ui.login import login_endpoints
from pilothouse.ui.session import SessionSigner, load_secret
from pilothouse.ui.web import Handler, PageContext, Ui, UiError

STATIC = Path(__file__).parent / "static"

PAGES: tuple[tuple[str, Handler, str], ...] = (
    ("/", pages_overview.dashboard, "GET"),
    ("/models", pages_overview.models, "GET"),
    ("/costs", pages_overview.costs, "GET"),
    ("/traces", pages_traces.traces, "GET"),
    ("/traces/export", pages_traces.export, "GET"),
    ("/traces/bulk", pages_traces.bulk_action, "POST"),
    ("/traces/views", pages_traces.save_view, "POST"),
    ("/traces/views/delete", pages_traces.delete_view, "POST"),
    ("/traces/{trace_id}", pages_traces.trace, "GET"),
    ("/traces/{trace_id}/spans/{span_id}", pages_traces.span, "GET"),
    ("/traces/{trace_id}/scores", pages_traces.add_score, "POST"),
    ("/traces/{trace_id}/dataset", pages_traces.add_to_dataset, "POST"),
    ("/sessions", pages_traces.sessions, "GET"),
    ("/sessions/{session_id:path}", pages_traces.session, "GET"),
    ("/users", pages_traces.users, "GET"),
    ("/keys", pages_admin.keys, "GET"),
    ("/keys", pages_admin.create_key, "POST"),
    ("/keys/{key_id}/revoke", pages_admin.revoke_key, "POST"),
    ("/budgets", pages_admin.create_budget, "POST"),
    ("/budgets/{budget_id}/delete", pages_admin.delete_budget, "POST"),
    ("/datasets", pages_evals.datasets, "GET"),
    ("/datasets/{name:path}/items/{item_id}/delete", pages_evals.delete_item, "POST"),
    ("/datasets/{name:path}/items/{item_id}", pages_evals.item_form, "GET"),
    ("/datasets/{name:path}/items/{item_id}", pages_evals.edit_item, "POST"),
    ("/datasets/{name:path}", pages_evals.dataset, "GET"),
    ("/evals", pages_evals.runs, "GET"),
    ("/evals/compare", pages_evals.compare, "GET"),
    ("/evals/{run_id}", pages_evals.run, "GET"),
    ("/evals/{run_id}/items/{item_id:path}", pages_eval_item.run_item, "GET"),
    ("/prompts", pages_prompts.prompts, "GET"),
    ("/prompts", pages_prompts.create_prompt, "POST"),
    ("/prompts/{name}", pages_prompts.prompt, "GET"),
    ("/prompts/{name}/diff", pages_prompts.diff, "GET"),
    ("/prompts/{name}/versions", pages_prompts.create_version, "POST"),
    ("/prompts/{name}/labels", pages_prompts.move_label, "POST"),
    ("/review", pages_review.home, "GET"),
    ("/review/configs", pages_review.create_config, "POST"),
    ("/review/queues", pages_review.create_queue, "POST"),
    ("/review/queues/{name}", pages_review.review_next, "GET"),
    ("/review/queues/{name}/dataset", pages_review.to_dataset, "POST"),
    ("/review/items/{item_id}", pages_review.submit, "POST"),
    ("/review/add", pages_review.add_traces, "POST"),
    ("/review/agreement", pages_review.agreement, "GET"),
    ("/monitors", pages_monitors.monitors, "GET"),
    ("/monitors/alerts/{alert_id}/ack", pages_monitors.acknowledge, "POST"),
    ("/monitors/{monitor_id}/silence", pages_monitors.silence, "POST"),
    ("/evaluators", pages_online.evaluators, "GET"),
)


def ui_routes(settings: Settings) -> list[BaseRoute]:
    """Every route of the web UI; sessions are signed with ``$PILOTHOUSE_SESSION_SECRET`` or a secret
    kept in the settings' home folder."""
    configured = settings.session_secret.get_secret_value() if settings.session_secret else None
    ui = Ui(SessionSigner(load_secret(settings.home, configured)))
    login_form, login, logout = login_endpoints(ui)
    routes: list[BaseRoute] = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    routes += [Route(path, ui.endpoint(handler), methods=[method]) for path, handler, method in PAGES]
    routes.append(Route(UNKNOWN_PATH_ROUTE, _unknown_page(ui), methods=["GET"]))  # last: a styled 404
    return routes


# Paths the UI never answers: an unknown one there gets the API's JSON 404, not a page.
MACHINE_PREFIXES = ("/api/", "/v1/", "/static/", "/metrics", "/health", "/api", "/v1")


def _unknown_page(ui: Ui) -> Callable[[Request], Awaitable[Response]]:
    """A page for a URL that names no page (after login): the styled 404 with where to go."""

    async def unknown(page: PageContext) -> Response:
        raise UiError(
            404,
            f"There is no page at {page.request.url.path}. The links on the left lead to every page; "
            "a trace, dataset or run is found from its list.",
            "Page not found",
        )

    endpoint = ui.endpoint(unknown)

    async def run(request: Request) -> Response:
        if request.url.path.startswith(MACHINE_PREFIXES):
            raise HTTPException(404)
        return await endpoint(request)

    return run
