"""Which end users (or sessions) were active last in a time range: the first step of the Users and
Sessions pages, before the sums of the ids found (:meth:`pilothouse.store.sql.SqlStore.activity`).

Grouping every trace of the range by id reads the whole range: at 1,000,000 spans, 30 days' 430,000
index entries for 500 users. The range's newest traces name the most recently active ids first, so a
first page walks the time index down from the range's end and stops once it has its ids (about as
many traces as ids when the ids are few and busy); past :data:`WALK_TRACES` traces (ids that are
many and rare, or traces without one) it groups the range after all.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, func, select, tuple_

from pilothouse.store import tables as t

WALK_TRACES = 5_000  # traces a walk reads at most before grouping the range instead
_CHUNK = 500  # traces read per statement of a walk


def newest_ids(
    conn: Connection,
    project_id: str,
    column: str,
    start_ns: int,
    end_ns: int,
    count: int,
    cursor: tuple[int, str] | None = None,
) -> list[tuple[str, int]]:
    """The ``count`` values of ``column`` (``user_id``, ``session_id``) whose newest trace in [start,
    end) is newest, as (id, that trace's start), ordered by (start, id) descending; after ``cursor``
    (start, id) in that order when given."""
    if cursor is None:
        walked = _walk(conn, project_id, column, start_ns, end_ns, count)
        if walked is not None:
            return walked
    return _grouped(conn, project_id, column, start_ns, end_ns, count, cursor)


def _walk(
    conn: Connection, project_id: str, column: str, start_ns: int, end_ns: int, count: int
) -> list[tuple[str, int]] | None:
    """:func:`newest_ids` without a cursor, walking the time index down; None past the budget."""
    c = t.traces.c
    group = c[column]
    last: dict[str, int] = {}  # id -> start of its newest trace (the first of its traces met)
    after: tuple[int, int] | None = None
    threshold: int | None = None  # the newest trace of the count-th id met
    read = 0
    while read < WALK_TRACES:
        stmt = select(c.start_ns, c.pk, group).where(
            c.project_id == project_id, c.start_ns >= start_ns, c.start_ns < end_ns
        )
        if after is not None:
            stmt = stmt.where(tuple_(c.start_ns, c.pk) < tuple_(*after))
        rows = conn.execute(stmt.order_by(c.start_ns.desc(), c.pk.desc()).limit(_CHUNK)).fetchall()
        for started, _, value in rows:
            # Ids are met newest first: once the traces are older than the count-th id's newest, no
            # later id can come before it (ids of equal times go by id: that time is read whole).
            if threshold is not None and started < threshold:
                return _ordered(last)[:count]
            if value is not None and value not in last:
                last[value] = started
                if len(last) == count:
                    threshold = started
        read += len(rows)
        if len(rows) < _CHUNK:  # the whole range was read
            return _ordered(last)[:count]
        after = (rows[-1][0], rows[-1][1])
    return None


def _ordered(last: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(last.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def _grouped(
    conn: Connection,
    project_id: str,
    column: str,
    start_ns: int,
    end_ns: int,
    count: int,
    cursor: tuple[int, str] | None,
) -> list[tuple[str, int]]:
    """:func:`newest_ids` by grouping the range's traces (the (project, id, start) index covers it)."""
    c = t.traces.c
    group = c[column]
    newest = func.max(c.start_ns)
    stmt: Select[Any] = (
        select(group.label("id"), newest.label("last"))
        .where(c.project_id == project_id, c.start_ns >= start_ns, c.start_ns < end_ns, group.is_not(None))
        .group_by(group)
        .order_by(newest.desc(), group.desc())
        .limit(count)
    )
    if cursor is not None:
        stmt = stmt.having(tuple_(newest, group) < tuple_(*cursor))
    return [(r.id, int(r.last)) for r in conn.execute(stmt)]
