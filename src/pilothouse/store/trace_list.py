"""The trace list's statement: a :class:`TraceQuery`'s filters, sort and keyset cursor as one SELECT on
``traces`` (``SqlStore.list_traces`` runs it; the full-text condition comes from store/search.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Text,
    and_,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql

from pilothouse.domain.queries import InvalidQuery, TraceQuery
from pilothouse.domain.traces import Status
from pilothouse.store import tables as t

# a row's value of each sort but "time" (for the next page's cursor)
SORT_VALUES: dict[str, Callable[[Any], float]] = {
    "latency": lambda row: row["end_ns"] - row["start_ns"],
    "cost": lambda row: row["cost_usd"],
    "tokens": lambda row: row["total_tokens"],
}


def escape_like(text: str) -> str:
    """A LIKE pattern (escape ``\\``) for rows that contain ``text``."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def sort_key(sort: str) -> ColumnElement[Any]:
    c = t.traces.c
    if sort == "latency":
        return c.end_ns - c.start_ns  # the expression of the index ix_traces_latency
    if sort == "cost":
        return c.cost_usd
    return c.total_tokens if sort == "tokens" else c.start_ns


# SQLite, a list sorted by cost, latency or tokens over a time range: past this many traces in the range,
# the sort's index (which holds the start) is walked in order and each entry's start checked, instead of
# reading the range's traces by time and sorting them (SQLite, without statistics, always reads the range)
RANGE_SORT_TRACES = 5_000
# A score filter whose score names at most this many traces reads them by key; with more, each
# candidate trace is probed for the score (at 1,000,000 spans a name no trace has took 200-300 ms of
# probes over every trace of the project).
SCORED_BY_KEY = 2_000


def walk_sort_index(conn: Connection, project_id: str, query: TraceQuery) -> bool:
    """SQLite: whether a page sorted by cost, latency or tokens over a time range should walk the sort's
    index (True) rather than read the range by time and sort it: the range holds more than
    :data:`RANGE_SORT_TRACES` traces (counted on the time index, up to that bound). A page walks about
    ``limit * traces / in range`` index entries, reading none of the rows it skips; the range costs a
    row read per trace in it. 7 days of 30, 1,000,000 spans: 360 ms by time, ~1 ms walking."""
    if query.sort == "time" or (query.start_ns is None and query.end_ns is None):
        return False
    c = t.traces.c
    conds = [c.project_id == project_id]
    if query.start_ns is not None:
        conds.append(c.start_ns >= query.start_ns)
    if query.end_ns is not None:
        conds.append(c.start_ns < query.end_ns)
    in_range = select(literal(1)).where(*conds).limit(RANGE_SORT_TRACES).subquery()
    return int(conn.execute(select(func.count()).select_from(in_range)).scalar_one()) >= RANGE_SORT_TRACES


def metadata_value(column: ColumnElement[Any], key: str, sqlite: bool) -> ColumnElement[Any]:
    """The text of one key of a JSON metadata column (NULL when missing)."""
    if sqlite:
        return sql_cast(func.json_extract(column, f'$."{key}"'), Text)
    return sql_cast(column, postgresql.JSONB).op("->>")(key)


def trace_list_statement(
    project_id: str,
    query: TraceQuery,
    sqlite: bool,
    search: ColumnElement[bool] | None = None,
    by_key: bool = False,
    sort_walk: bool = False,
) -> Select[Any]:
    """One page (and one row more) of ``query``'s traces. ``search``: the full-text condition;
    ``by_key``: it names a few traces by key, which are then read by key and sorted (SQLite: otherwise
    the planner walks the project's time index, which holds the key too, whole); ``sort_walk``: the
    time range is checked on the sort's index as it is walked (:func:`walk_sort_index`)."""
    c = t.traces.c
    # by key: "+ 0" and "|| ''" keep SQLite's planner off the indexes that begin with these columns
    start = c.start_ns + 0 if by_key or sort_walk else c.start_ns
    conds: list[ColumnElement[bool]] = [(c.project_id.concat("") if by_key else c.project_id) == project_id]
    if query.start_ns is not None:
        conds.append(start >= query.start_ns)
    if query.end_ns is not None:
        conds.append(start < query.end_ns)
    for column, value in (
        (c.name, query.name),
        (c.user_id, query.user_id),
        (c.session_id, query.session_id),
        (c.environment, query.environment),
        (c.release, query.release),
    ):
        if value is not None:
            conds.append(column == value)
    for tag in query.tags:
        conds.append(c.tags.like(escape_like(orjson.dumps(tag).decode()), escape="\\"))
    for key, value in query.metadata:
        conds.append(metadata_value(c.metadata, key, sqlite) == value)
    if query.status is Status.ERROR:
        conds.append(c.error_count > 0)
    elif query.status is not None:
        conds.append(c.error_count == 0)
    if query.min_latency_ms is not None:
        conds.append(c.end_ns - c.start_ns >= int(query.min_latency_ms * 1e6))
    if query.min_cost_usd is not None:
        conds.append(c.cost_usd >= query.min_cost_usd.usd)
    if query.max_latency_ms is not None:
        conds.append(c.end_ns - c.start_ns <= int(query.max_latency_ms * 1e6))
    if query.max_cost_usd is not None:
        conds.append(c.cost_usd <= query.max_cost_usd.usd)
    s = t.spans.c
    if query.model is not None:
        # A probe per candidate trace through the spans' (trace_pk, span_id) index, as a scalar
        # subquery: PostgreSQL turns an EXISTS under OR into a hashed subplan that first reads
        # every span of the model (121 ms at 200,000 spans, growing with the table; this: 8 ms).
        # A call matches by the name it was asked for as well as by the one that served it.
        # No span starts before its trace: on PostgreSQL that bound skips the day partitions older
        # than the trace (at run time) instead of probing every day's index for each trace.
        of_trace = and_(s.trace_pk == c.pk, s.start_ns >= c.start_ns)
        in_trace = and_(of_trace, or_(s.model == query.model, s.request_model == query.model))
        probe = select(literal(1)).where(in_trace).limit(1).scalar_subquery()
        conds.append(or_(c.model == query.model, probe.is_not(None)))
    if query.key_id is not None:
        of_trace = and_(s.trace_pk == c.pk, s.start_ns >= c.start_ns)  # as the model's probe
        through_key = select(literal(1)).where(of_trace, s.key_id == query.key_id).limit(1)
        conds.append(through_key.scalar_subquery().is_not(None))
    if query.score_name is not None:
        sc = t.scores.c
        # PostgreSQL: the traces' id compares in "C" (migration 0034), the scores' index in the default
        # collation; the comparison in the scores' lets their (project, trace id) index find each one's
        by_id: ColumnElement[Any] = c.id if sqlite else c.id.collate("default")
        score_conds = [sc.project_id == project_id, sc.trace_id == by_id, sc.name == query.score_name]
        if query.min_score is not None:
            score_conds.append(sc.value >= query.min_score)
        if query.max_score is not None:
            score_conds.append(sc.value <= query.max_score)
        conds.append(select(literal(1)).where(*score_conds).exists())
    order: tuple[ColumnElement[Any], ...] = (c.start_ns, c.pk)
    if query.sort != "time":
        order = (sort_key(query.sort), *order)
    if by_key:  # sorted after reading, not by walking an index in order
        order = tuple(col + 0 for col in order)
    if query.cursor is not None:
        # Pages are ordered by (sort value, start, key); the cursor names the last trace by its id
        # (a trace deleted meanwhile: the page goes on after its value and start time).
        *position, trace_id = query.cursor
        last = t.traces.alias("last")
        last_pk = select(last.c.pk).where(last.c.project_id == project_id, last.c.id == trace_id)
        if len(position) != len(order) - 1:
            raise InvalidQuery("cursor is not one of a list sorted this way")
        bound = tuple_(*position, func.coalesce(last_pk.scalar_subquery(), 0))
        conds.append(tuple_(*order) < bound if query.descending else tuple_(*order) > bound)
    if search is not None:  # last: the other conditions are cheaper
        conds.append(search)
    ordering = [col.desc() if query.descending else col.asc() for col in order]
    return select(t.traces).where(*conds).order_by(*ordering).limit(query.limit + 1)


def scored_traces(conn: Connection, project_id: str, query: TraceQuery) -> ColumnElement[bool] | None:
    """The traces that hold ``query``'s score (its name and value range) as a condition on their keys
    when they are at most :data:`SCORED_BY_KEY` (None when there are more: the list probes each
    candidate trace instead)."""
    if query.score_name is None:
        return None
    sc, c = t.scores.c, t.traces.c
    conds = [sc.project_id == project_id, sc.name == query.score_name]
    if query.min_score is not None:
        conds.append(sc.value >= query.min_score)
    if query.max_score is not None:
        conds.append(sc.value <= query.max_score)
    scored = (
        select(c.pk)
        .select_from(t.scores.join(t.traces, and_(c.project_id == sc.project_id, c.id == sc.trace_id)))
        .where(*conds)
        .distinct()
        .limit(SCORED_BY_KEY + 1)
    )
    keys = list(conn.execute(scored).scalars())
    if len(keys) > SCORED_BY_KEY:
        return None
    return c.pk.in_(keys) if keys else false()
