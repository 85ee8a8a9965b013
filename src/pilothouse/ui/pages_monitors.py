"""Monitors and their alert history: what each monitor watches and how near its threshold it is, the
alerts newest first, and (admin scope) acknowledge an alert or silence a monitor. The use cases are
:class:`pilothouse.quality.monitors.Monitors`, as the API's and the CLI's."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import RedirectResponse, Response

from pilothouse.domain.keys import Scope
from pilothouse.quality.monitors import MonitorError, Monitors
from pilothouse.quality.monitors._service import vars_of
from pilothouse.quality.monitors._worker import LEASE_NAME
from pilothouse.ui.web import PageContext, UiError

NOTICES = {"acked": "Alert acknowledged.", "silenced": "Monitor silenced.", "unsilenced": "Silence lifted."}


def _service(page: PageContext) -> Monitors:
    return Monitors(page.state.store, page.state.settings.webhook_allow)


async def _page(page: PageContext, status: int = 200, **extra: Any) -> Response:
    service = _service(page)
    found = await page.run(service.all, page.project_id)
    alerts = await page.run(lambda: service.alerts(page.project_id, limit=200))
    names = {m.id: m.name for m in found}
    lease = await page.run(service.repository.lease, LEASE_NAME)
    now_ns = time.time_ns()
    job = {
        "holder": lease[0] if lease else None,
        "live": lease is not None and lease[1] > now_ns,
        "expires_ns": lease[1] if lease else None,
        "here": page.state.monitors is not None,
    }
    rows = [
        {
            "monitor": m,
            "filters": ", ".join(f"{k} {v}" for k, v in vars_of(m.filters).items() if v is not None),
            "near": None if not m.state.h else min(1.0, m.state.statistic / m.state.h),
        }
        for m in found
    ]
    return page.render(
        "monitors.html",
        status=status,
        rows=rows,
        alerts=alerts,
        names=names,
        job=job,
        is_admin=page.viewer.can(Scope.ADMIN),
        **{"notice": None, "error": None, **extra},
    )


async def monitors(page: PageContext) -> Response:
    """``/monitors``: the monitors and the alert history."""
    return await _page(page, notice=NOTICES.get(page.params.get("done", "")))


async def acknowledge(page: PageContext) -> Response:
    """``POST /monitors/alerts/{id}/ack``."""
    page.require(Scope.ADMIN)
    alert_id = str(page.request.path_params["alert_id"])
    try:
        await page.run(_service(page).acknowledge, page.project_id, alert_id, f"ui: {page.viewer.key_name}")
    except MonitorError as exc:
        raise UiError(exc.status, str(exc)) from None
    return RedirectResponse("/monitors?done=acked#alerts", status_code=303)


async def silence(page: PageContext) -> Response:
    """``POST /monitors/{id}/silence``: ``until`` a duration (2h) or a time; ``off`` lifts it."""
    page.require(Scope.ADMIN)
    monitor_id = str(page.request.path_params["monitor_id"])
    until = page.field("until") or "off"
    try:
        monitor = await page.run(_service(page).silence, page.project_id, monitor_id, until)
    except MonitorError as exc:
        if exc.status == 404:
            raise UiError(404, str(exc)) from None
        return await _page(page, status=400, error=f"Not silenced: {exc}")
    done = "silenced" if monitor.silenced_until_ns is not None else "unsilenced"
    return RedirectResponse(f"/monitors?done={done}", status_code=303)
