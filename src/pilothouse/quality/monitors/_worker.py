"""The monitors' background job: every ``interval_s`` one process (the holder of a lease row in the
database, so several server processes evaluate each monitor once) reads what arrived since each
monitor's cursor, feeds its detector, stores the alerts, and sends them to the log and the monitor's
webhook (Slack-compatible JSON: ``text`` plus the alert's fields). Never on a request's path: the reads
run in a thread, the sends in the event loop after them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from pilothouse.domain.monitors import Monitor, MonitorAlert, MonitorState
from pilothouse.domain.webhooks import WebhookRefused, displayed_webhook_url
from pilothouse.gateway.webhooks import post_webhook
from pilothouse.quality.monitors._evaluation import (
    Alarm,
    baseline_from_minutes,
    baseline_from_scores,
    feed_minutes,
    feed_scores,
    needs_baseline,
)
from pilothouse.quality.monitors._service import vars_of
from pilothouse.store.leased_jobs import LeasedLoop
from pilothouse.store.monitors import MonitorStore
from pilothouse.store.refreshed import Refreshed
from pilothouse.store.sql import SqlStore

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("pilothouse.monitors")

LEASE_READ_S = 1.0  # /health reads the lease at most this often
LEASE_NAME = "monitors"
SCORE_SETTLE_NS = 5 * 10**9  # scores newer than this may still be committing elsewhere: read next pass
MINUTE_LAG_S = 120  # a minute's rollup is read once the ingest queue has written it
MAX_SCORES_PER_PASS = 50_000  # per monitor; the rest waits for the next pass (the cursor keeps its place)
BASELINE_SCORES = 20_000  # the newest scores of the window a baseline rests on


@dataclass(frozen=True, slots=True)
class Fired:
    """An alert stored by a pass, with its monitor (where it is sent)."""

    monitor: Monitor
    alert: MonitorAlert


class MonitorWorker:
    """Evaluates every monitor, once per pass, in whichever process holds the lease."""

    def __init__(
        self,
        store: SqlStore,
        *,
        interval_s: float = 60.0,
        webhook_allow: tuple[str, ...] = (),
        clock: Callable[[], int] = time.time_ns,
        holder: str | None = None,
    ) -> None:
        self.repository = MonitorStore(store)
        self.interval_s = interval_s
        self.webhook_allow = webhook_allow
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.passes = 0  # passes this process ran (holding the lease)
        self.last_pass_ns: int | None = None
        self.started_ns: int | None = None
        # who holds the job and until when, read at most every second for /health
        self.lease: Refreshed[tuple[str, int] | None] = Refreshed(
            lambda: self.repository.lease(LEASE_NAME), LEASE_READ_S
        )
        self._client: httpx.AsyncClient | None = None
        self._loop = LeasedLoop(
            "monitors",
            self.run_once,
            lambda: self.repository.release_lease(LEASE_NAME, self.holder),
            interval_s,
        )

    # -- one pass (in a thread) ---------------------------------------------------------------------

    def evaluate(self, now_ns: int) -> list[Fired] | None:
        """One pass over every monitor at ``now_ns``; None when another process holds the lease."""
        ttl_ns = self.lease_ttl_ns()
        if not self.repository.take_lease(LEASE_NAME, self.holder, now_ns, ttl_ns):
            return None
        fired: list[Fired] = []
        for monitor in self.repository.list_monitors():
            # renewed before each monitor: a pass that outlives the lease stops instead of racing the
            # process that took it over
            if not self.repository.take_lease(LEASE_NAME, self.holder, max(now_ns, self.clock()), ttl_ns):
                log.warning("the monitors lease passed to another process during a pass; it goes on there")
                break
            try:
                fired.extend(self._evaluate_one(monitor, now_ns))
            except Exception:  # one broken monitor must not stop the others
                log.exception("evaluating monitor %s failed", monitor.id)
        self.passes += 1
        self.last_pass_ns = now_ns
        return fired

    def _baseline(self, monitor: Monitor, now_ns: int, end_ns: int) -> MonitorState | None:
        start_ns = now_ns - monitor.baseline_s * 10**9
        if monitor.metric.reads_scores:
            assert monitor.score_name is not None
            values = self.repository.score_values(
                monitor.project_id, monitor.score_name, monitor.filters, start_ns, end_ns, BASELINE_SCORES
            )
            return baseline_from_scores(monitor, values, now_ns)
        minutes = self.repository.minutes(
            monitor.project_id, monitor.filters, start_ns // 10**9, end_ns // 10**9
        )
        return baseline_from_minutes(monitor, minutes, now_ns)

    def _evaluate_one(self, monitor: Monitor, now_ns: int) -> list[Fired]:
        alert_open = self.repository.has_open_alert(monitor.id)
        scores = monitor.metric.reads_scores
        read_until_ns = now_ns - SCORE_SETTLE_NS
        read_until_s = (now_ns // 10**9 - MINUTE_LAG_S) // 60 * 60
        # no new baseline while silenced either: a fault that began in a silence must not become normal
        if needs_baseline(monitor, now_ns, alert_open or monitor.silenced(now_ns)):
            first = monitor.state.baseline is None
            state = self._baseline(monitor, now_ns, read_until_ns if scores else read_until_s * 10**9)
            if state is None:
                return []  # too little history yet: try again next pass
            if first:  # watch from here on: what the baseline saw is not fed again
                state.cursor_ns = read_until_ns if scores else read_until_s * 10**9
                state.cursor_id = ""
            monitor = replace(monitor, state=state)
            self.repository.save_state(monitor.id, state)
            if first:
                return []
        if scores:
            assert monitor.score_name is not None
            samples = self.repository.scores_after(
                monitor.project_id,
                monitor.score_name,
                monitor.filters,
                (monitor.state.cursor_ns, monitor.state.cursor_id),
                read_until_ns,
                MAX_SCORES_PER_PASS,
            )
            state, alarms = feed_scores(monitor, samples)
        else:
            minutes = self.repository.minutes(
                monitor.project_id, monitor.filters, monitor.state.cursor_ns // 10**9, read_until_s
            )
            state, alarms = feed_minutes(
                monitor, minutes, max(read_until_s, monitor.state.cursor_ns // 10**9)
            )
        self.repository.save_state(monitor.id, state)
        fired: list[Fired] = []
        silenced = monitor.silenced(now_ns)
        # one open alert per monitor, until acknowledged; while silenced, one open silenced alert (a
        # silence keeps a fault's record without an alert per alarm of the CUSUM restarting)
        open_now = self.repository.has_open_alert(monitor.id, silenced=True) if silenced else alert_open
        for alarm in alarms:
            if open_now:
                continue
            alert = self._store_alert(monitor, alarm, silenced)
            fired.append(Fired(monitor, alert))
            open_now = True
        return fired

    def _store_alert(self, monitor: Monitor, alarm: Alarm, silenced: bool) -> MonitorAlert:
        alert = MonitorAlert(
            id=uuid.uuid4().hex,
            monitor_id=monitor.id,
            project_id=monitor.project_id,
            fired_ns=alarm.at_ns,
            metric=monitor.metric,
            observed=alarm.observed,
            baseline=alarm.baseline,
            samples=alarm.samples,
            statistic=alarm.statistic,
            message=alarm.message,
            silenced=silenced,
            delivery="silenced" if silenced else None,
        )
        self.repository.add_alert(alert)
        return alert

    # -- in the event loop ----------------------------------------------------------------------------

    async def run_once(self) -> list[Fired]:
        """One pass, then the alerts sent; an empty list when another process holds the lease."""
        fired = await asyncio.to_thread(self.evaluate, self.clock())
        for item in fired or []:
            if not item.alert.silenced:
                await self._notify(item)
        return fired or []

    async def _notify(self, item: Fired) -> None:
        monitor, alert = item.monitor, item.alert
        log.warning("monitor alert: %s", alert.message)
        if monitor.webhook_url is None:
            delivery = "no webhook"
        else:
            delivery = await self._post(monitor.webhook_url, alert_payload(monitor, alert))
        await asyncio.to_thread(self.repository.set_delivery, alert.id, delivery)

    async def _post(self, url: str, payload: dict[str, Any]) -> str:
        import httpx

        if self._client is None:  # redirects are not followed: they could lead anywhere
            self._client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        shown = displayed_webhook_url(url, full=False)
        try:
            response = await post_webhook(self._client, url, orjson.dumps(payload), self.webhook_allow)
            response.raise_for_status()
        except WebhookRefused as exc:
            log.warning("monitor alert webhook %s refused: %s", shown, exc)
            return f"refused: {exc}"
        except httpx.HTTPStatusError as exc:
            log.warning("monitor alert webhook %s answered %d", shown, exc.response.status_code)
            return f"answered {exc.response.status_code}"
        except httpx.HTTPError as exc:  # its message names the address: the class says enough
            log.warning("monitor alert webhook %s failed: %s", shown, type(exc).__name__)
            return f"failed: {type(exc).__name__}"
        return "sent"

    def start(self) -> None:
        """Run a pass every ``interval_s`` in the background until :meth:`close`."""
        self.started_ns = self.clock()
        self._loop.start()

    def lease_ttl_ns(self) -> int:
        """How long a pass's lease lasts: three intervals (at least a minute)."""
        return int(max(60.0, 3 * self.interval_s) * 1e9)

    def health(self) -> dict[str, Any]:
        """The watchdog's view, from the lease as it is now (a database read: call it in a thread)."""
        return self.health_of(self.repository.lease(LEASE_NAME))

    def health_of(self, lease: tuple[str, int] | None) -> dict[str, Any]:
        """The watchdog's view for ``/health``, given the job's lease (:attr:`lease` keeps it a second
        for /health). Whichever process holds the lease renews it at every pass, so a lease that ran out
        means no process has evaluated the monitors for three intervals: a stall (a hung pass, a dead
        holder nobody replaced)."""
        now = self.clock()
        reasons = []
        if lease is not None and lease[1] < now:
            late = (now - lease[1] + self.lease_ttl_ns()) / 1e9
            reasons.append(f"no process has evaluated the monitors for {late:.0f}s")
        elif lease is None and self.started_ns is not None and now - self.started_ns > self.lease_ttl_ns():
            reasons.append("no process has taken the monitors' job")
        holder = None if lease is None else ("this process" if lease[0] == self.holder else "another process")
        return {
            "passes": self.passes,
            "last_pass_s": None if self.last_pass_ns is None else round((now - self.last_pass_ns) / 1e9, 3),
            "held_by": holder,
            "stalled": bool(reasons),
            "reasons": reasons,
        }

    async def close(self) -> None:
        """Stop, give the lease up (another process takes over at once) and release connections."""
        await self._loop.close()
        if self._client is not None:
            await self._client.aclose()


def alert_payload(monitor: Monitor, alert: MonitorAlert) -> dict[str, Any]:
    """The webhook's JSON: Slack's ``text`` (a Slack incoming webhook shows it) and the alert's fields."""
    fired = datetime.fromtimestamp(alert.fired_ns / 1e9, UTC).isoformat(timespec="seconds")
    return {
        "text": f"[Pilothouse] {alert.message}",
        "type": "monitor.alert",
        "alert_id": alert.id,
        "monitor_id": monitor.id,
        "monitor": monitor.name,
        "project_id": monitor.project_id,
        "metric": monitor.metric.value,
        "score_name": monitor.score_name,
        "filters": {k: v for k, v in vars_of(monitor.filters).items() if v is not None},
        "observed": alert.observed,
        "baseline": alert.baseline,
        "samples": alert.samples,
        "statistic": alert.statistic,
        "fired_at": fired,
    }
