"""Online evaluators: each evaluator of the project with its rules, version and counts, and the
worker's watchdog (a stall shows here as on ``/health``). Evaluators are made and edited through
``/api/evaluators`` or ``pilothouse evaluators``."""

from __future__ import annotations

from starlette.responses import Response

from pilothouse.ui.web import PageContext


async def evaluators(page: PageContext) -> Response:
    """``/evaluators``: the online evaluators with their counts, and the worker's health."""
    online = page.state.online
    statuses = [] if online is None else await page.run(online.statuses, page.project_id)
    worker = None if page.state.online_worker is None else page.state.online_worker.health()
    return page.render("evaluators.html", statuses=statuses, worker=worker)
