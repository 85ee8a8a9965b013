"""Retention per project and the store's size on disk.

A project with ``retention_days`` loses its traces that started before now minus that many days: their
spans, scores and the trace rows, in batches of traces, each batch its own transaction (a writer never
waits long for the lock on SQLite, and PostgreSQL's row locks stay few). On PostgreSQL, where spans are
partitioned by day (:mod:`pilothouse.store.partitions`), a day partition all of whose spans are past
their projects' retention is dropped whole first; the batches then delete the traces (and whatever
spans are left elsewhere). The rollups stay, so the dashboards' long ranges still show the totals of
what was deleted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import delete, func, select, text, update

from pilothouse.store import tables as t
from pilothouse.store.partitions import drop_expired
from pilothouse.store.sql import SqlStore

log = logging.getLogger("pilothouse.retention")

DAY_NS = 86_400 * 10**9
MAX_RETENTION_DAYS = 36_500


class LeaseLost(Exception):
    """The retention job's lease passed to another process during a pass: this one stops."""


# SQLite: the largest span key given so far, kept before spans are deleted (migration 0022)
_NOTE_TOP_SPAN_KEY = (
    "INSERT OR REPLACE INTO span_search_top (id, top) VALUES (1, max("
    "coalesce((SELECT top FROM span_search_top), 0), coalesce((SELECT max(pk) FROM spans), 0)))"
)


class RetentionStore:
    """Reads and applies the projects' retention."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine
        self.dropped_partitions: list[str] = []  # the span partitions the last expire() dropped

    def set_retention_days(self, project_id: str, days: int | None) -> None:
        """Keep ``project_id``'s traces ``days`` days (None: for ever); the project is created if
        missing. Raises ValueError for a count outside 1..36,500."""
        if days is not None and not 1 <= days <= MAX_RETENTION_DAYS:
            raise ValueError(f"retention must be 1 to {MAX_RETENTION_DAYS:,} days, not {days}")
        self.store.ensure_project(project_id)
        with self.engine.begin() as conn:
            conn.execute(update(t.projects).where(t.projects.c.id == project_id).values(retention_days=days))

    def retention(self) -> dict[str, int]:
        """Each project with a retention: its days. A count outside 1..36,500 (written into the table
        by hand: the CLI refuses it) is skipped with a warning: 0 or less would delete the project's
        new traces too, and a count past ~100,000 years made every pass fail (bigint out of range),
        stopping every project's retention."""
        p = t.projects.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(p.id, p.retention_days).where(p.retention_days.is_not(None))).all()
        kept: dict[str, int] = {}
        for row in rows:
            if 1 <= row.retention_days <= MAX_RETENTION_DAYS:
                kept[row.id] = int(row.retention_days)
            else:
                log.warning(
                    "project %s: retention_days %s is outside 1 to %s; its traces are kept until it is "
                    "set again (pilothouse projects retention)",
                    row.id,
                    row.retention_days,
                    f"{MAX_RETENTION_DAYS:,}",
                )
        return kept

    def expire_project(
        self,
        project_id: str,
        before_ns: int,
        batch_traces: int = 1000,
        still_held: Callable[[], bool] = lambda: True,
    ) -> int:
        """Delete ``project_id``'s traces that started before ``before_ns`` (with their spans and
        scores), ``batch_traces`` at a time; the number of traces deleted. ``still_held`` is asked
        before each batch: False (the job's lease passed to another process) stops here."""
        tr, sp, sc = t.traces.c, t.spans.c, t.scores.c
        deleted = 0
        while True:
            if not still_held():
                raise LeaseLost
            with self.engine.begin() as conn:
                rows = conn.execute(
                    select(tr.pk, tr.id)
                    .where(tr.project_id == project_id, tr.start_ns < before_ns)
                    .limit(batch_traces)
                ).all()
                if not rows:
                    return deleted
                pks, ids = [r.pk for r in rows], [r.id for r in rows]
                if self.store.dialect == "sqlite":  # see SqlStore._write_chunk: keys are not reused
                    conn.exec_driver_sql(_NOTE_TOP_SPAN_KEY)
                conn.execute(delete(t.spans).where(sp.trace_pk.in_(pks)))
                conn.execute(delete(t.scores).where(sc.project_id == project_id, sc.trace_id.in_(ids)))
                conn.execute(delete(t.traces).where(tr.pk.in_(pks)))
            deleted += len(rows)

    def expire_partitions(self, now_ns: int) -> list[str]:
        """PostgreSQL: drop the span partitions all of whose spans are past retention at ``now_ns`` (the
        names dropped; none on SQLite)."""
        cutoffs = {project_id: now_ns - days * DAY_NS for project_id, days in self.retention().items()}
        return drop_expired(self.engine, cutoffs)

    def expire(
        self, now_ns: int, batch_traces: int = 1000, still_held: Callable[[], bool] = lambda: True
    ) -> dict[str, int]:
        """Apply every project's retention at ``now_ns``: traces deleted per project (those with some).
        Whole span partitions go first on PostgreSQL (:meth:`expire_partitions`). ``still_held`` is
        asked before each batch (:meth:`expire_project`): a pass that outlives its lease stops (raising
        :class:`LeaseLost`) instead of deleting beside the process that took the job over."""
        done: dict[str, int] = {}
        self.dropped_partitions = self.expire_partitions(now_ns)
        for project_id, days in self.retention().items():
            count = self.expire_project(project_id, now_ns - days * DAY_NS, batch_traces, still_held)
            if count:
                done[project_id] = count
        return done

    def disk_bytes(self) -> int:
        """What the database takes on disk: the SQLite file with its WAL, or PostgreSQL's database."""
        if self.store.dialect == "sqlite":
            database = self.engine.url.database
            if not database or database == ":memory:":
                return 0
            return sum(os.stat(path).st_size for path in (database, database + "-wal") if Path(path).exists())
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.pg_database_size(text("current_database()")))).scalar_one())
