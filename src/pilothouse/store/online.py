"""The online evaluators' repository: their rules (every version kept), the live traces a poll looks
at, and the persisted work queue that workers claim under a lease.

A work item is one (evaluator version, trace): the unique constraint makes enqueueing idempotent, so
any number of pollers (one per server process) may offer the same trace. A claim takes due items, or
items whose lease has expired (a crashed worker's), in one transaction: ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, ``BEGIN IMMEDIATE`` (one writer) on SQLite, so no item is held by two live leases.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError

from pilothouse.domain.traces import Trace
from pilothouse.store import tables as t
from pilothouse.store.rows import loads, trace_from_row
from pilothouse.store.sql import SqlStore, root_texts

__all__ = [
    "FINAL_STATES",
    "PENDING",
    "RUNNING",
    "SCORED",
    "UNMEASURED",
    "DuplicateEvaluator",
    "EvaluatorRow",
    "LiveTrace",
    "OnlineStore",
    "Outcome",
    "WorkItem",
]

from pilothouse.store._online_queue import (
    FINAL_STATES,
    PENDING,
    RUNNING,
    SCORED,
    UNMEASURED,
    Outcome,
    WorkItem,
    WorkQueue,
)


class DuplicateEvaluator(ValueError):
    """An evaluator name this project already has."""


@dataclass(frozen=True, slots=True)
class EvaluatorRow:
    """One evaluator at its current version; ``definition`` is its JSON rules as stored."""

    id: str
    project_id: str
    name: str
    version: int
    definition: dict[str, Any]
    enabled: bool
    cursor_pk: int
    created_ns: int
    updated_ns: int


@dataclass(frozen=True, slots=True)
class LiveTrace:
    """What the rules look at in a stored trace (its texts are read later, by the worker)."""

    pk: int
    project_id: str
    id: str
    name: str | None
    model: str | None
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    start_ns: int


def _evaluator(row: Any) -> EvaluatorRow:
    return EvaluatorRow(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        version=row.version,
        definition=orjson.loads(row.definition),
        enabled=bool(row.enabled),
        cursor_pk=row.cursor_pk,
        created_ns=row.created_ns,
        updated_ns=row.updated_ns,
    )


class OnlineStore(WorkQueue):
    """Repository of online evaluators and their work queue, over the SQL store's engine."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine
        self._sqlite = store.dialect == "sqlite"

    # -- evaluators --------------------------------------------------------------------------------

    def max_trace_pk(self) -> int:
        """The largest trace key stored (0 for none): where a new evaluator's live poll starts."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(t.traces.c.pk), 0))).scalar_one())

    def create_evaluator(
        self, project_id: str, name: str, definition: dict[str, Any], *, enabled: bool, cursor_pk: int
    ) -> EvaluatorRow:
        """A new evaluator at version 1; :class:`DuplicateEvaluator` when the name is taken."""
        now = time.time_ns()
        evaluator_id = uuid.uuid4().hex
        text = orjson.dumps(definition).decode()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.online_evaluators.insert().values(
                        id=evaluator_id,
                        project_id=project_id,
                        name=name,
                        version=1,
                        definition=text,
                        enabled=enabled,
                        cursor_pk=cursor_pk,
                        created_ns=now,
                        updated_ns=now,
                    )
                )
                conn.execute(
                    t.online_evaluator_versions.insert().values(
                        evaluator_id=evaluator_id, version=1, definition=text, created_ns=now
                    )
                )
        except IntegrityError:
            raise DuplicateEvaluator(name) from None
        found = self.get_evaluator(project_id, name)
        assert found is not None
        return found

    def update_evaluator(
        self, project_id: str, name: str, definition: dict[str, Any] | None, enabled: bool | None
    ) -> EvaluatorRow | None:
        """Change an evaluator: a changed definition is a new version (its traces are scored again
        from now on); ``enabled`` alone is not. None when there is no such evaluator."""
        now = time.time_ns()
        with self.engine.begin() as conn:
            if self._sqlite:  # the write lock first (FOR UPDATE's part): no two edits read version N
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            row = conn.execute(
                select(t.online_evaluators)
                .where(t.online_evaluators.c.project_id == project_id, t.online_evaluators.c.name == name)
                .with_for_update()
            ).first()
            if row is None:
                return None
            values: dict[str, Any] = {"updated_ns": now}
            if enabled is not None:
                values["enabled"] = enabled
                if enabled and not row.enabled:  # resumed: from now on (a backfill covers the pause)
                    values["cursor_pk"] = conn.execute(
                        select(func.coalesce(func.max(t.traces.c.pk), 0))
                    ).scalar_one()
            if definition is not None and definition != orjson.loads(row.definition):
                text = orjson.dumps(definition).decode()
                values.update(version=row.version + 1, definition=text)
                conn.execute(
                    t.online_evaluator_versions.insert().values(
                        evaluator_id=row.id, version=row.version + 1, definition=text, created_ns=now
                    )
                )
            conn.execute(
                t.online_evaluators.update().where(t.online_evaluators.c.id == row.id).values(**values)
            )
        return self.get_evaluator(project_id, name)

    def delete_evaluator(self, project_id: str, name: str) -> bool:
        """Delete an evaluator and its unfinished work (its scores and finished items stay)."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(t.online_evaluators.c.id).where(
                    t.online_evaluators.c.project_id == project_id, t.online_evaluators.c.name == name
                )
            ).first()
            if row is None:
                return False
            gone = conn.execute(t.online_evaluators.delete().where(t.online_evaluators.c.id == row.id))
            if not gone.rowcount:  # another request deleted it meanwhile: it was not this one's to delete
                return False
            i = t.online_items.c
            conn.execute(
                t.online_items.delete().where(i.evaluator_id == row.id, i.state.in_((PENDING, RUNNING)))
            )
        return True

    def get_evaluator(self, project_id: str, name: str) -> EvaluatorRow | None:
        """One evaluator of this project by name, or None."""
        c = t.online_evaluators.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.online_evaluators).where(c.project_id == project_id, c.name == name)
            ).first()
        return None if row is None else _evaluator(row)

    def list_evaluators(
        self, project_id: str | None = None, *, enabled_only: bool = False
    ) -> list[EvaluatorRow]:
        """The evaluators of a project (every project's when None), by name."""
        c = t.online_evaluators.c
        stmt = select(t.online_evaluators).order_by(c.project_id, c.name)
        if project_id is not None:
            stmt = stmt.where(c.project_id == project_id)
        if enabled_only:
            stmt = stmt.where(c.enabled.is_(True))
        with self.engine.connect() as conn:
            return [_evaluator(r) for r in conn.execute(stmt)]

    def definition_at(self, evaluator_id: str, version: int) -> dict[str, Any] | None:
        """The definition an evaluator had at a version, or None."""
        v = t.online_evaluator_versions.c
        with self.engine.connect() as conn:
            text = conn.execute(
                select(v.definition).where(v.evaluator_id == evaluator_id, v.version == version)
            ).scalar()
        return None if text is None else dict(orjson.loads(text))

    def advance_cursor(self, evaluator_ids: Iterable[str], cursor_pk: int) -> None:
        """Move the live poll's cursor of these evaluators forward (never back)."""
        ids = list(evaluator_ids)
        if not ids:
            return
        c = t.online_evaluators.c
        with self.engine.begin() as conn:
            conn.execute(
                update(t.online_evaluators)
                .where(c.id.in_(ids), c.cursor_pk < cursor_pk)
                .values(cursor_pk=cursor_pk)
            )

    # -- the traces rules look at ------------------------------------------------------------------

    _LIVE_COLUMNS = ("pk", "project_id", "id", "name", "model", "tags", "metadata", "start_ns")

    def _live(self, conn: Connection, conds: Sequence[Any], limit: int) -> list[LiveTrace]:
        c = t.traces.c
        stmt = select(*(c[n] for n in self._LIVE_COLUMNS)).where(*conds).order_by(c.pk).limit(limit)
        return [
            LiveTrace(
                r.pk,
                r.project_id,
                r.id,
                r.name,
                r.model,
                tuple(loads(r.tags, [])),
                loads(r.metadata, {}),
                r.start_ns,
            )
            for r in conn.execute(stmt)
        ]

    def live_traces(self, after_pk: int, up_to_pk: int, limit: int) -> list[LiveTrace]:
        """Traces with keys in (after_pk, up_to_pk], in key order, at most ``limit``."""
        c = t.traces.c
        with self.engine.connect() as conn:
            return self._live(conn, [c.pk > after_pk, c.pk <= up_to_pk], limit)

    def live_trace_keys(self, after_pk: int, up_to_pk: int, limit: int) -> list[tuple[int, str, str]]:
        """(key, project, trace id) of traces with keys in (after_pk, up_to_pk], in key order: a poll
        samples these before it reads any trace's details."""
        c = t.traces.c
        stmt = (
            select(c.pk, c.project_id, c.id)
            .where(c.pk > after_pk, c.pk <= up_to_pk)
            .order_by(c.pk)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(map(tuple, conn.execute(stmt)))  # plain tuples: a third of the time of Row attributes

    def traces_by_key(self, trace_pks: Sequence[int]) -> list[LiveTrace]:
        """The rules' view of these traces, in key order."""
        if not trace_pks:
            return []
        c = t.traces.c
        with self.engine.connect() as conn:
            return self._live(conn, [c.pk.in_(list(trace_pks))], len(trace_pks))

    def traces_for(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Trace]:
        """The stored traces of (project, trace id) pairs, their input and output taken from the root
        span where the trace has none (as the trace page shows them): two queries for a whole batch."""
        if not keys:
            return {}
        c = t.traces.c
        found: dict[tuple[str, str], Trace] = {}
        by_project: dict[str, set[str]] = {}
        for project_id, trace_id in keys:
            by_project.setdefault(project_id, set()).add(trace_id)
        with self.engine.connect() as conn:
            # per project, through the (project_id, id) index (a row-value IN scans the table on SQLite)
            rows = [
                r._mapping
                for project_id, ids in by_project.items()
                for r in conn.execute(
                    select(t.traces).where(c.project_id == project_id, c.id.in_(sorted(ids)))
                )
            ]
            roots = root_texts(conn, [r["pk"] for r in rows])
        for row in rows:
            trace = trace_from_row(row)
            root_in, root_out = roots.get(row["pk"], (None, None))
            if trace.input is None or trace.output is None:
                trace = replace(
                    trace,
                    input=trace.input if trace.input is not None else root_in,
                    output=trace.output if trace.output is not None else root_out,
                )
            found[trace.project_id, trace.id] = trace
        return found

    def traces_started(
        self, project_id: str, start_ns: int, end_ns: int, after_pk: int, limit: int
    ) -> list[LiveTrace]:
        """This project's traces that started in [start_ns, end_ns), in key order after ``after_pk``
        (a backfill's pages)."""
        c = t.traces.c
        conds = [c.project_id == project_id, c.start_ns >= start_ns, c.start_ns < end_ns, c.pk > after_pk]
        with self.engine.connect() as conn:
            return self._live(conn, conds, limit)

    def span_facts(self, trace_pks: Sequence[int]) -> dict[int, tuple[set[str], set[str]]]:
        """Each trace's span names and models, requested and served (for the rules that filter on them:
        a filter on ``echo`` finds the calls a client asked for as ``echo`` and the gateway served as
        ``echo-1``)."""
        facts: dict[int, tuple[set[str], set[str]]] = {pk: (set(), set()) for pk in trace_pks}
        if not trace_pks:
            return facts
        s = t.spans.c
        with self.engine.connect() as conn:
            for row in conn.execute(
                select(s.trace_pk, s.name, s.model, s.request_model).where(s.trace_pk.in_(list(trace_pks)))
            ):
                names, models = facts[row.trace_pk]
                names.add(row.name)
                models.update(m for m in (row.model, row.request_model) if m)
        return facts

    def score_facts(
        self, project_id: str, trace_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, float | None, str | None]]]:
        """Each trace's scores as (name, value, string value)."""
        found: dict[str, list[tuple[str, float | None, str | None]]] = {i: [] for i in trace_ids}
        if not trace_ids:
            return found
        c = t.scores.c
        stmt = select(c.trace_id, c.name, c.value, c.string_value).where(
            c.project_id == project_id, c.trace_id.in_(list(trace_ids))
        )
        with self.engine.connect() as conn:
            for row in conn.execute(stmt):
                found[row.trace_id].append((row.name, row.value, row.string_value))
        return found
