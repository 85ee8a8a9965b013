"""The online evaluators' persisted work queue (a mixin of :class:`pilothouse.store.online.OnlineStore`):
one item per (evaluator version, trace), enqueued idempotently, claimed under a lease, completed in
batches."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Float, and_, bindparam, func, or_, select, update

from pilothouse.domain.traces import Score
from pilothouse.store import tables as t
from pilothouse.store.rows import score_row
from pilothouse.store.sql import SqlStore

PENDING, RUNNING, SCORED, UNMEASURED = "pending", "running", "scored", "unmeasured"
FINAL_STATES = (SCORED, UNMEASURED)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One persisted (evaluator version, trace) to score, and how far it got."""

    pk: int
    project_id: str
    evaluator_id: str
    version: int
    trace_id: str
    state: str
    attempts: int
    due_ns: int
    lease_owner: str | None = None
    lease_until_ns: int | None = None
    reason: str | None = None
    score_id: str | None = None
    value: float | None = None
    cost_usd: float | None = None
    created_ns: int = 0
    finished_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker made of a leased item: final (``state`` scored, with its ``score``, or
    unmeasured with a ``reason``), or another attempt due at ``retry_due_ns``."""

    item: WorkItem
    state: str
    reason: str | None = None
    score: Score | None = None
    cost_usd: float | None = None
    retry_due_ns: int | None = None


def _item(row: Any) -> WorkItem:
    m = row._mapping
    return WorkItem(**{name: m[name] for name in WorkItem.__slots__})


def _add_cost(column: Any) -> Any:
    """The item's cost plus this attempt's (either may be NULL: unknown, never 0)."""
    added = bindparam("b_cost", type_=Float)
    return func.coalesce(column + added, column, added)


class WorkQueue:
    """The queue's statements; the class using it provides ``store``, ``engine`` and ``_sqlite``."""

    store: SqlStore
    engine: Engine
    _sqlite: bool

    def enqueue(self, items: Sequence[tuple[str, str, int, str]], due_ns: int) -> int:
        """Add (project, evaluator id, version, trace id) items not queued yet; how many were new."""
        if not items:
            return 0
        now = time.time_ns()
        rows = [
            {
                "project_id": p,
                "evaluator_id": e,
                "version": v,
                "trace_id": tr,
                "state": PENDING,
                "due_ns": due_ns,
                "attempts": 0,
                "created_ns": now,
            }
            for p, e, v, tr in dict.fromkeys(items)
        ]
        stmt = (
            self.store._insert(t.online_items)
            .on_conflict_do_nothing(index_elements=["evaluator_id", "version", "trace_id"])
            .returning(t.online_items.c.pk)
        )
        with self.engine.begin() as conn:
            return len(conn.execute(stmt, rows).all())

    def claim(self, owner: str, limit: int, now_ns: int, lease_ns: int) -> list[WorkItem]:
        """Lease up to ``limit`` due items (pending, or running under an expired lease) to ``owner``."""
        i = t.online_items.c
        ready = or_(
            and_(i.state == PENDING, i.due_ns <= now_ns),
            and_(i.state == RUNNING, i.lease_until_ns < now_ns),
        )
        with self.engine.begin() as conn:
            if self._sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            pks = list(
                conn.execute(
                    select(i.pk)
                    .where(ready)
                    .order_by(i.due_ns)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if not pks:
                return []
            rows = conn.execute(
                update(t.online_items)
                .where(i.pk.in_(pks), ready)
                .values(
                    state=RUNNING,
                    lease_owner=owner,
                    lease_until_ns=now_ns + lease_ns,
                    attempts=i.attempts + 1,
                )
                .returning(*t.online_items.c)
            ).all()
        return sorted((_item(r) for r in rows), key=lambda item: item.due_ns)

    def complete(self, owner: str, outcomes: Sequence[Outcome]) -> int:
        """Write a batch of outcomes in one transaction: each final item's score (when it has one:
        inserted unless a score of that id exists, so a score is stored once whoever writes it) and
        its state, or its next attempt's due time. Items whose lease ``owner`` lost meanwhile are left
        alone (their scores still count: the same id). How many items were updated."""
        if not outcomes:
            return 0
        now = time.time_ns()
        scores = [score_row(o.item.project_id, o.score) for o in outcomes if o.score is not None]
        retries = [
            {
                "b_pk": o.item.pk,
                "b_owner": owner,
                "b_due": o.retry_due_ns,
                "b_reason": o.reason,
                "b_cost": o.cost_usd,
            }
            for o in outcomes
            if o.retry_due_ns is not None
        ]
        finals = [
            {
                "b_pk": o.item.pk,
                "b_owner": owner,
                "b_state": o.state,
                "b_reason": o.reason,
                "b_score": None if o.score is None else o.score.id,
                "b_value": None if o.score is None else o.score.value,
                "b_cost": o.cost_usd,
                "b_now": now,
            }
            for o in outcomes
            if o.retry_due_ns is None
        ]
        updated = 0
        with self.engine.begin() as conn:
            if self._sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            if scores:
                conn.execute(self.store._insert(t.scores).on_conflict_do_nothing(), scores)
            for statement, rows in ((self._retry_update, retries), (self._final_update, finals)):
                if rows:
                    count = conn.execute(statement, rows).rowcount
                    # a driver that cannot count an executemany's rows: counted as all updated
                    updated += count if count >= 0 and (len(rows) == 1 or self._multi_rowcount) else len(rows)
        return updated

    @functools.cached_property
    def _multi_rowcount(self) -> bool:
        return bool(self.engine.dialect.supports_sane_multi_rowcount)

    @functools.cached_property
    def _retry_update(self) -> Any:
        i = t.online_items.c
        return (
            update(t.online_items)
            .where(i.pk == bindparam("b_pk"), i.state == RUNNING, i.lease_owner == bindparam("b_owner"))
            .values(
                state=PENDING,
                due_ns=bindparam("b_due"),
                lease_owner=None,
                lease_until_ns=None,
                reason=bindparam("b_reason"),
                cost_usd=_add_cost(i.cost_usd),
            )
        )

    @functools.cached_property
    def _final_update(self) -> Any:
        i = t.online_items.c
        return (
            update(t.online_items)
            .where(i.pk == bindparam("b_pk"), i.state == RUNNING, i.lease_owner == bindparam("b_owner"))
            .values(
                state=bindparam("b_state"),
                reason=bindparam("b_reason"),
                score_id=bindparam("b_score"),
                value=bindparam("b_value"),
                cost_usd=_add_cost(i.cost_usd),
                finished_ns=bindparam("b_now"),
                lease_until_ns=None,
            )
        )

    def cost_since(self, evaluator_id: str, since_ns: int) -> float:
        """What an evaluator's judge calls cost on items finished (or retried) since ``since_ns``."""
        i = t.online_items.c
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.coalesce(func.sum(i.cost_usd), 0.0)).where(
                    i.evaluator_id == evaluator_id,
                    or_(i.finished_ns >= since_ns, and_(i.finished_ns.is_(None), i.created_ns >= since_ns)),
                )
            ).scalar_one()
        return float(total)

    def counts(self, project_id: str) -> dict[tuple[str, int], dict[str, int]]:
        """Items per (evaluator id, version) and state, in this project."""
        i = t.online_items.c
        stmt = (
            select(i.evaluator_id, i.version, i.state, func.count())
            .where(i.project_id == project_id)
            .group_by(i.evaluator_id, i.version, i.state)
        )
        found: dict[tuple[str, int], dict[str, int]] = {}
        with self.engine.connect() as conn:
            for evaluator_id, version, state, count in conn.execute(stmt):
                found.setdefault((evaluator_id, version), {})[state] = int(count)
        return found

    def items_for_trace(self, project_id: str, trace_id: str) -> list[WorkItem]:
        """The work items of one trace (every evaluator and version)."""
        i = t.online_items.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.online_items)
                .where(i.project_id == project_id, i.trace_id == trace_id)
                .order_by(i.pk)
            )
            return [_item(r) for r in rows]

    def items(self, evaluator_id: str, *, limit: int = 100) -> list[WorkItem]:
        """An evaluator's latest items, newest first."""
        i = t.online_items.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.online_items)
                .where(i.evaluator_id == evaluator_id)
                .order_by(i.pk.desc())
                .limit(limit)
            )
            return [_item(r) for r in rows]

    def backlog(self, now_ns: int) -> tuple[int, int | None]:
        """Items due now and not final (pending, or running under an expired lease), and the oldest
        one's due time: what the watchdog looks at."""
        i = t.online_items.c
        ready = or_(
            and_(i.state == PENDING, i.due_ns <= now_ns),
            and_(i.state == RUNNING, i.lease_until_ns < now_ns),
        )
        with self.engine.connect() as conn:
            count, oldest = conn.execute(select(func.count(), func.min(i.due_ns)).where(ready)).one()
        return int(count), None if oldest is None else int(oldest)
