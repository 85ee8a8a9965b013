"""The monitors' repository: monitors and their state, alerts, the lease that lets one process at a time
evaluate them, and the two series they read (scores in time order; per-minute rollups of model calls)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from pilothouse.domain.monitors import (
    AlertStatus,
    Monitor,
    MonitorAlert,
    MonitorFilters,
    MonitorMetric,
    MonitorState,
)
from pilothouse.domain.sketch import add_counts
from pilothouse.store import tables as t
from pilothouse.store.leased_jobs import Leases
from pilothouse.store.rows import unpack_hist

MAX_ALERTS_LISTED = 1000


@dataclass(frozen=True, slots=True)
class ScoreSample:
    """A score as a monitor reads it: its time, id (the cursor's tie-break) and value."""

    created_ns: int
    id: str
    value: float


@dataclass(frozen=True, slots=True)
class MinuteSample:
    """One minute of model calls matching a monitor's filters: calls, errors, tokens, cost (USD) and the
    latency sketch's counts."""

    bucket: int  # the minute's start, seconds since the epoch
    count: int
    errors: int
    tokens: int
    cost_usd: float
    latency_counts: list[int]


def _state_json(state: MonitorState) -> str:
    return orjson.dumps(dataclasses.asdict(state)).decode()


def _monitor(row: Any) -> Monitor:
    state = MonitorState(**orjson.loads(row.state))
    return Monitor(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        metric=MonitorMetric(row.metric),
        filters=MonitorFilters(row.model, row.route, row.prompt_name, row.prompt_version),
        score_name=row.score_name,
        threshold=row.threshold,
        shift=row.shift,
        arl0=row.arl0,
        baseline_s=row.baseline_s,
        webhook_url=row.webhook_url,
        created_ns=row.created_ns,
        silenced_until_ns=row.silenced_until_ns,
        state=state,
    )


def _alert(row: Any) -> MonitorAlert:
    return MonitorAlert(
        id=row.id,
        monitor_id=row.monitor_id,
        project_id=row.project_id,
        fired_ns=row.fired_ns,
        metric=MonitorMetric(row.metric),
        observed=row.observed,
        baseline=row.baseline,
        samples=row.samples,
        statistic=row.statistic,
        message=row.message,
        silenced=bool(row.silenced),
        status=AlertStatus(row.status),
        acknowledged_ns=row.acknowledged_ns,
        acknowledged_by=row.acknowledged_by,
        delivery=row.delivery,
    )


class MonitorStore(Leases):
    """Monitor queries over a :class:`SqlStore`'s database (and the job leases its worker holds)."""

    # -- monitors -------------------------------------------------------------------------------------

    def create_monitor(self, monitor: Monitor) -> None:
        """Store a new monitor (its project is created if missing)."""
        self.store.ensure_project(monitor.project_id)
        f = monitor.filters
        with self.engine.begin() as conn:
            conn.execute(
                insert(t.monitors).values(
                    id=monitor.id,
                    project_id=monitor.project_id,
                    name=monitor.name,
                    metric=monitor.metric.value,
                    score_name=monitor.score_name,
                    threshold=monitor.threshold,
                    model=f.model,
                    route=f.route,
                    prompt_name=f.prompt_name,
                    prompt_version=f.prompt_version,
                    shift=monitor.shift,
                    arl0=monitor.arl0,
                    baseline_s=monitor.baseline_s,
                    webhook_url=monitor.webhook_url,
                    created_ns=monitor.created_ns,
                    silenced_until_ns=monitor.silenced_until_ns,
                    state=_state_json(monitor.state),
                )
            )

    def list_monitors(self, project_id: str | None = None) -> list[Monitor]:
        """A project's monitors (every project's when None), oldest first."""
        query = select(t.monitors).order_by(t.monitors.c.created_ns, t.monitors.c.id)
        if project_id is not None:
            query = query.where(t.monitors.c.project_id == project_id)
        with self.engine.connect() as conn:
            return [_monitor(row) for row in conn.execute(query)]

    def get_monitor(self, project_id: str, monitor_id: str) -> Monitor | None:
        """One monitor of the project, or None."""
        query = select(t.monitors).where(t.monitors.c.project_id == project_id, t.monitors.c.id == monitor_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _monitor(row)

    def delete_monitor(self, project_id: str, monitor_id: str) -> bool:
        """Delete a monitor of the project and its alerts; False when it has no such monitor."""
        with self.engine.begin() as conn:
            deleted = conn.execute(
                delete(t.monitors).where(t.monitors.c.project_id == project_id, t.monitors.c.id == monitor_id)
            ).rowcount
            if deleted:
                conn.execute(delete(t.monitor_alerts).where(t.monitor_alerts.c.monitor_id == monitor_id))
        return bool(deleted)

    def save_state(self, monitor_id: str, state: MonitorState) -> None:
        """Store where the monitor's detector stands."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.monitors).where(t.monitors.c.id == monitor_id).values(state=_state_json(state))
            )

    def silence(self, project_id: str, monitor_id: str, until_ns: int | None) -> bool:
        """Keep the monitor's alerts quiet until ``until_ns`` (None: no longer silenced); False when the
        project has no such monitor."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(t.monitors)
                .where(t.monitors.c.project_id == project_id, t.monitors.c.id == monitor_id)
                .values(silenced_until_ns=until_ns)
            ).rowcount
        return bool(changed)

    # -- alerts ---------------------------------------------------------------------------------------

    def add_alert(self, alert: MonitorAlert) -> None:
        """Store an alert."""
        values = {f.name: getattr(alert, f.name) for f in dataclasses.fields(alert)}
        values["metric"], values["status"] = alert.metric.value, alert.status.value
        with self.engine.begin() as conn:
            conn.execute(insert(t.monitor_alerts).values(**values))

    def set_delivery(self, alert_id: str, delivery: str) -> None:
        """Record what became of an alert's webhook."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.monitor_alerts)
                .where(t.monitor_alerts.c.id == alert_id)
                .values(delivery=delivery[:500])
            )

    def has_open_alert(self, monitor_id: str, *, silenced: bool = False) -> bool:
        """True while one of the monitor's alerts is unacknowledged: one raised while it was not
        silenced, or (``silenced``) one raised while it was."""
        a = t.monitor_alerts.c
        query = (
            select(a.id)
            .where(a.monitor_id == monitor_id, a.status == AlertStatus.OPEN.value, a.silenced.is_(silenced))
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def list_alerts(
        self,
        project_id: str,
        *,
        monitor_id: str | None = None,
        status: AlertStatus | None = None,
        limit: int = 100,
    ) -> list[MonitorAlert]:
        """A project's alerts, newest first (at most ``limit``, itself at most 1,000)."""
        a = t.monitor_alerts.c
        query = select(t.monitor_alerts).where(a.project_id == project_id)
        if monitor_id is not None:
            query = query.where(a.monitor_id == monitor_id)
        if status is not None:
            query = query.where(a.status == status.value)
        query = query.order_by(a.fired_ns.desc(), a.id.desc()).limit(max(1, min(limit, MAX_ALERTS_LISTED)))
        with self.engine.connect() as conn:
            return [_alert(row) for row in conn.execute(query)]

    def acknowledge(self, project_id: str, alert_id: str, by: str, now_ns: int) -> MonitorAlert | None:
        """Acknowledge an alert of the project (again: the first acknowledgement stays); None when it
        has no such alert."""
        a = t.monitor_alerts.c
        with self.engine.begin() as conn:
            conn.execute(
                update(t.monitor_alerts)
                .where(a.project_id == project_id, a.id == alert_id, a.status == AlertStatus.OPEN.value)
                .values(
                    status=AlertStatus.ACKNOWLEDGED.value, acknowledged_ns=now_ns, acknowledged_by=by[:200]
                )
            )
            row = conn.execute(
                select(t.monitor_alerts).where(a.project_id == project_id, a.id == alert_id)
            ).first()
        return None if row is None else _alert(row)

    # -- the series -----------------------------------------------------------------------------------

    def _score_filters(
        self, project_id: str, name: str, filters: MonitorFilters
    ) -> list[ColumnElement[bool]]:
        s = t.scores.c
        where: list[ColumnElement[bool]] = [s.project_id == project_id, s.name == name, s.value.is_not(None)]
        if filters == MonitorFilters():
            return where
        tr = t.traces.c
        trace = [tr.project_id == s.project_id, tr.id == s.trace_id]
        if filters.model is not None:
            # the trace's model, or the model any of its calls asked for or was served: a gateway
            # route's name (what clients ask for) as well as the upstream's, as `traces list --model`
            sp = t.spans.c
            asked = exists().where(
                sp.trace_pk == tr.pk, or_(sp.model == filters.model, sp.request_model == filters.model)
            )
            trace.append(or_(tr.model == filters.model, asked))
        if filters.route is not None:
            trace.append(tr.name == filters.route)
        if filters.prompt_name is not None or filters.prompt_version is not None:
            sp = t.spans.c
            prompt = [sp.trace_pk == tr.pk]
            if filters.prompt_name is not None:
                prompt.append(sp.prompt_name == filters.prompt_name)
            if filters.prompt_version is not None:
                prompt.append(sp.prompt_version == filters.prompt_version)
            trace.append(exists().where(*prompt))
        where.append(exists().where(*trace))
        return where

    def scores_after(
        self,
        project_id: str,
        name: str,
        filters: MonitorFilters,
        after: tuple[int, str],
        until_ns: int,
        limit: int,
    ) -> list[ScoreSample]:
        """The scores named ``name`` (numeric or boolean: those with a value) matching ``filters``,
        after the cursor ``(created_ns, id)`` and up to ``until_ns``, in time order, at most ``limit``."""
        s = t.scores.c
        after_ns, after_id = after
        query = (
            select(s.created_ns, s.id, s.value)
            .where(
                *self._score_filters(project_id, name, filters),
                (s.created_ns > after_ns) | and_(s.created_ns == after_ns, s.id > after_id),
                s.created_ns <= until_ns,
            )
            .order_by(s.created_ns, s.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [ScoreSample(r.created_ns, r.id, float(r.value)) for r in conn.execute(query)]

    def score_values(
        self, project_id: str, name: str, filters: MonitorFilters, start_ns: int, end_ns: int, limit: int
    ) -> list[float]:
        """The values of the scores named ``name`` matching ``filters`` in [start, end): the newest
        ``limit`` of them (a baseline)."""
        s = t.scores.c
        query = (
            select(s.value)
            .where(
                *self._score_filters(project_id, name, filters),
                s.created_ns >= start_ns,
                s.created_ns < end_ns,
            )
            .order_by(s.created_ns.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [float(v) for v in conn.execute(query).scalars()]

    def minutes(
        self, project_id: str, filters: MonitorFilters, start_s: int, end_s: int
    ) -> list[MinuteSample]:
        """The per-minute sums of model calls matching ``filters`` (model and route) in minutes
        [start, end), in time order; minutes without calls are left out."""
        c = t.rollup_minute.c
        query = select(
            c.bucket, c["count"], c.errors, c.input_tokens, c.output_tokens, c.cost_usd, c.latency_hist
        ).where(c.project_id == project_id, c.bucket >= start_s, c.bucket < end_s)
        if filters.model is not None:
            query = query.where(c.model == filters.model)
        if filters.route is not None:
            query = query.where(c.name == filters.route)
        merged: dict[int, MinuteSample] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query.order_by(c.bucket)):
                hist = unpack_hist(row.latency_hist)
                seen = merged.get(row.bucket)
                tokens = int(row.input_tokens) + int(row.output_tokens)
                if seen is None:
                    merged[row.bucket] = MinuteSample(
                        row.bucket, int(row[1]), int(row.errors), tokens, float(row.cost_usd), hist
                    )
                else:
                    merged[row.bucket] = MinuteSample(
                        row.bucket,
                        seen.count + int(row[1]),
                        seen.errors + int(row.errors),
                        seen.tokens + tokens,
                        seen.cost_usd + float(row.cost_usd),
                        add_counts(seen.latency_counts, hist) if hist else seen.latency_counts,
                    )
        return [m for m in merged.values() if m.count > 0]
