"""The monitors' use cases, written once for the API, the CLI and the UI: create (checking every field),
list, delete, the alerts, silence and acknowledge."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from pilothouse.domain.monitors import AlertStatus, Monitor, MonitorAlert, MonitorFilters, MonitorMetric
from pilothouse.domain.timeparse import parse_duration_s, parse_time_ns
from pilothouse.domain.webhooks import WebhookRefused
from pilothouse.gateway.webhooks import resolve_webhook_sync
from pilothouse.store.monitors import MonitorStore
from pilothouse.store.sql import SqlStore

DEFAULT_SHIFTS = {  # the change to detect: rate points for rates, standard deviations otherwise
    MonitorMetric.SCORE_PASS_RATE: 0.075,
    MonitorMetric.ERROR_RATE: 0.05,
}
DEFAULT_SD_SHIFT = 1.0
DEFAULT_ARL0 = {True: 8000.0, False: 10080.0}  # rates: samples; per-minute series: a week of minutes
DEFAULT_BASELINE_S = 7 * 24 * 3600
MAX_MONITORS_PER_PROJECT = 200
_FIELDS = frozenset(
    {
        "name",
        "metric",
        "score_name",
        "threshold",
        "model",
        "route",
        "prompt_name",
        "prompt_version",
        "shift",
        "arl0",
        "baseline_s",
        "webhook_url",
    }
)


class MonitorError(ValueError):
    """A monitor request that cannot be done; ``param`` names the field at fault, ``status`` is the
    HTTP status an API answers with (400 bad input, 404 not found, 409 too many)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def _text(body: Mapping[str, Any], name: str, *, required: bool = False, limit: int = 200) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit or "\x00" in value:
        raise MonitorError(f"'{name}' must be a non-empty string of at most {limit} characters.", name)
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in value):  # they reach logs and Slack as is
        raise MonitorError(f"'{name}' may not hold control characters (line breaks, tabs, ...).", name)
    return value.strip()


def _is_id(text: str) -> bool:
    """True for what a monitor or alert id can be (32 hex digits): anything else is not found without
    asking the database (which may refuse a NUL character outright)."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise MonitorError(f"'{name}' must be a number from {low:g} to {high:g}.", name)
    return float(value)


def monitor_from_request(project_id: str, body: Mapping[str, Any], webhook_allow: tuple[str, ...]) -> Monitor:
    """A new monitor from a request's fields (the API's JSON body, the CLI's options), every field
    checked; :class:`MonitorError` names the first one at fault. The webhook URL must reach an address
    alerts may go to (public, or named by the ``webhook_allow`` setting)."""
    if extra := sorted(set(body) - _FIELDS):
        raise MonitorError(f"Unknown field {extra[0]!r}.", extra[0])
    name = _text(body, "name", required=True)
    assert name is not None
    try:
        metric = MonitorMetric(str(body.get("metric")))
    except ValueError:
        allowed = ", ".join(m.value for m in MonitorMetric)
        raise MonitorError(f"'metric' must be one of {allowed}.", "metric") from None
    score_name = _text(body, "score_name")
    if metric.reads_scores and score_name is None:
        raise MonitorError(f"A {metric.value} monitor needs 'score_name'.", "score_name")
    if not metric.reads_scores and score_name is not None:
        raise MonitorError(f"'score_name' applies to score monitors, not {metric.value}.", "score_name")
    threshold = None
    if metric is MonitorMetric.SCORE_PASS_RATE:
        threshold = _number(body, "threshold", 0.5, -1e12, 1e12)
    elif body.get("threshold") is not None:
        raise MonitorError("'threshold' applies to score_pass_rate monitors only.", "threshold")
    filters = MonitorFilters(*(_text(body, f) for f in ("model", "route", "prompt_name", "prompt_version")))
    if not metric.reads_scores and (filters.prompt_name or filters.prompt_version):
        raise MonitorError(
            "Prompt filters apply to score monitors: the rollups of model calls are not kept per prompt.",
            "prompt_name" if filters.prompt_name else "prompt_version",
        )
    if metric.is_rate:
        shift = _number(body, "shift", DEFAULT_SHIFTS[metric], 0.01, 0.9)
    else:
        shift = _number(body, "shift", DEFAULT_SD_SHIFT, 0.1, 10.0)
    arl0 = _number(body, "arl0", DEFAULT_ARL0[metric.is_rate], 100.0, 1e6)
    baseline_s = int(_number(body, "baseline_s", DEFAULT_BASELINE_S, 3600, 90 * 24 * 3600))
    webhook = _text(body, "webhook_url", limit=2048)
    if webhook is not None:
        try:  # where alerts may go: public addresses, or those the webhook_allow setting names
            resolve_webhook_sync(webhook, webhook_allow)
        except WebhookRefused as exc:
            raise MonitorError(f"'webhook_url' is refused: {exc}.", "webhook_url") from None
    return Monitor(
        id=uuid.uuid4().hex,
        project_id=project_id,
        name=name,
        metric=metric,
        filters=filters,
        score_name=score_name,
        threshold=threshold,
        shift=shift,
        arl0=arl0,
        baseline_s=baseline_s,
        webhook_url=webhook,
        created_ns=time.time_ns(),
    )


MAX_SILENCE_NS = 90 * 24 * 3600 * 10**9


def silence_end_ns(until: str | None, now_ns: int) -> int | None:
    """When a silence ends: ``until`` a time (ISO 8601, Unix seconds) or for a duration from now
    (``30m``, ``2h``, ``7d``); None or ``off``: no silence. At most 90 days ahead."""
    if until is None or until.strip().lower() in ("off", "none", ""):
        return None
    if not isinstance(until, str) or len(until) > 64:
        raise MonitorError("'until' must be a time or a duration such as 2h.", "until")
    try:
        if until.strip()[-1:].lower() in ("s", "m", "h", "d", "w") and until.strip()[0].isdigit():
            end = now_ns + round(parse_duration_s(until.strip()) * 1e9)
        else:
            end = parse_time_ns(until, now_ns)
    except ValueError as exc:
        raise MonitorError(f"'until' cannot be read: {exc}", "until") from None
    if end <= now_ns:
        raise MonitorError("'until' must be in the future.", "until")
    if end - now_ns > MAX_SILENCE_NS:
        raise MonitorError("A silence lasts at most 90 days.", "until")
    return end


class Monitors:
    """The monitors of a store: what the API, the CLI and the UI call."""

    def __init__(self, store: SqlStore, webhook_allow: tuple[str, ...] = ()) -> None:
        self.repository = MonitorStore(store)
        self.webhook_allow = webhook_allow

    def create(self, project_id: str, body: Mapping[str, Any]) -> Monitor:
        """Check and store a new monitor; it takes its baseline at the worker's next pass."""
        monitor = monitor_from_request(project_id, body, self.webhook_allow)
        if len(self.repository.list_monitors(project_id)) >= MAX_MONITORS_PER_PROJECT:
            raise MonitorError(f"A project has at most {MAX_MONITORS_PER_PROJECT} monitors.", status=409)
        self.repository.create_monitor(monitor)
        return monitor

    def unmatched(self, monitor: Monitor, now_ns: int | None = None) -> str | None:
        """A warning when the monitor's series has nothing in its baseline window now (a misspelt
        score name, a filter that matches no trace), else None: such a monitor never takes a baseline
        until data comes, and says nothing meanwhile."""
        end_ns = time.time_ns() if now_ns is None else now_ns
        start_ns = end_ns - monitor.baseline_s * 10**9
        project, f = monitor.project_id, monitor.filters
        named = [f"{name} {value!r}" for name, value in vars_of(f).items() if value is not None]
        where = f" with {', '.join(named)}" if named else ""
        if monitor.metric.reads_scores:
            score = monitor.score_name or ""
            if self.repository.score_values(project, score, f, start_ns, end_ns, 1):
                return None
            what = f"no score named {score!r}{where}"
            hint = "check the score's name on a trace (pilothouse traces show) and the filters"
        else:
            if self.repository.minutes(project, f, start_ns // 10**9, end_ns // 10**9):
                return None
            what = f"no model calls{where}"
            hint = "call metrics' model is the one that served the call (the trace list's MODEL column)"
        days = monitor.baseline_s / 86400
        span = f"{days:g} day{'s' if days != 1 else ''}" if days >= 1 else f"{monitor.baseline_s} s"
        return f"{what} in the last {span}: the monitor has no baseline until some arrive; {hint}."

    def all(self, project_id: str) -> list[Monitor]:
        """The project's monitors, oldest first."""
        return self.repository.list_monitors(project_id)

    def get(self, project_id: str, monitor_id: str) -> Monitor:
        """One monitor; :class:`MonitorError` (404) when the project has none of that id."""
        monitor = self.repository.get_monitor(project_id, monitor_id) if _is_id(monitor_id) else None
        if monitor is None:
            raise MonitorError(f"No monitor {monitor_id!r} in this project.", status=404)
        return monitor

    def resolve(self, project_id: str, id_or_name: str) -> str:
        """The id of the monitor ``id_or_name`` names (its id, or its name when one monitor has it), for
        the CLI, where people type names; :class:`MonitorError` (404) when none, 400 when several share
        the name."""
        if _is_id(id_or_name) and self.repository.get_monitor(project_id, id_or_name) is not None:
            return id_or_name
        named = [m.id for m in self.repository.list_monitors(project_id) if m.name == id_or_name]
        if not named:
            raise MonitorError(f"No monitor {id_or_name!r} in this project.", status=404)
        if len(named) > 1:
            raise MonitorError(
                f"{len(named)} monitors are called {id_or_name!r}: give one's id (pilothouse monitors list)."
            )
        return named[0]

    def delete(self, project_id: str, monitor_id: str) -> None:
        """Delete a monitor and its alerts; :class:`MonitorError` (404) when there is none."""
        if not _is_id(monitor_id) or not self.repository.delete_monitor(project_id, monitor_id):
            raise MonitorError(f"No monitor {monitor_id!r} in this project.", status=404)

    def silence(self, project_id: str, monitor_id: str, until: str | None) -> Monitor:
        """Keep a monitor's alerts quiet (stored, not sent) ``until`` a time (ISO 8601 or Unix seconds)
        or for a duration (``2h``, ``3d``); None (or ``off``) lifts the silence."""
        until_ns = silence_end_ns(until, time.time_ns())
        if not _is_id(monitor_id) or not self.repository.silence(project_id, monitor_id, until_ns):
            raise MonitorError(f"No monitor {monitor_id!r} in this project.", status=404)
        return self.get(project_id, monitor_id)

    def alerts(
        self,
        project_id: str,
        *,
        monitor_id: str | None = None,
        status: AlertStatus | None = None,
        limit: int = 100,
    ) -> list[MonitorAlert]:
        """The project's alerts, newest first (none for a monitor id that cannot be one)."""
        if monitor_id is not None and not _is_id(monitor_id):
            return []
        return self.repository.list_alerts(project_id, monitor_id=monitor_id, status=status, limit=limit)

    def acknowledge(self, project_id: str, alert_id: str, by: str) -> MonitorAlert:
        """Acknowledge an alert (the monitor may alert again on its next alarm)."""
        by = by.replace("\x00", "").strip()[:200] or "unknown"
        alert = (
            self.repository.acknowledge(project_id, alert_id, by, time.time_ns())
            if _is_id(alert_id)
            else None
        )
        if alert is None:
            raise MonitorError(f"No alert {alert_id!r} in this project.", status=404)
        return alert


def monitor_json(monitor: Monitor, *, admin: bool) -> dict[str, Any]:
    """A monitor as the API and the CLI show it; its webhook URL whole only to admins."""
    from pilothouse.domain.webhooks import displayed_webhook_url

    f, s = monitor.filters, monitor.state
    return {
        "id": monitor.id,
        "name": monitor.name,
        "metric": monitor.metric.value,
        "score_name": monitor.score_name,
        "threshold": monitor.threshold,
        "filters": {k: v for k, v in vars_of(f).items() if v is not None},
        "shift": monitor.shift,
        "arl0": monitor.arl0,
        "baseline_s": monitor.baseline_s,
        "webhook_url": displayed_webhook_url(monitor.webhook_url, full=admin),
        "created_ns": monitor.created_ns,
        "silenced_until_ns": monitor.silenced_until_ns,
        "state": {
            "baseline": s.baseline,
            "baseline_sd": s.baseline_sd,
            "baseline_n": s.baseline_n,
            "statistic": s.statistic,
            "threshold": s.h,
            "samples_since_change": s.run_samples,
        },
    }


def vars_of(filters: MonitorFilters) -> dict[str, str | None]:
    """The filters by name."""
    return {
        "model": filters.model,
        "route": filters.route,
        "prompt_name": filters.prompt_name,
        "prompt_version": filters.prompt_version,
    }


def alert_json(alert: MonitorAlert) -> dict[str, Any]:
    """An alert as the API and the CLI show it."""
    return {
        "id": alert.id,
        "monitor_id": alert.monitor_id,
        "fired_ns": alert.fired_ns,
        "metric": alert.metric.value,
        "observed": alert.observed,
        "baseline": alert.baseline,
        "samples": alert.samples,
        "statistic": alert.statistic,
        "message": alert.message,
        "silenced": alert.silenced,
        "status": alert.status.value,
        "acknowledged_ns": alert.acknowledged_ns,
        "acknowledged_by": alert.acknowledged_by,
        "delivery": alert.delivery,
    }
