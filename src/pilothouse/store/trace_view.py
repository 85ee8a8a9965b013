"""Reads of the trace view: a trace's outline (every span without its texts, for the tree), one span
whole (its detail, read when it is selected) and the trace's neighbours in time (previous / next).

The outline reads only the small columns of the spans, so a trace of 10,000 spans costs its tree, not
the megabytes of prompts and answers its spans hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, cast

from sqlalchemy import func, select, tuple_

from pilothouse.domain.traces import Observation, Score, Trace
from pilothouse.store import tables as t
from pilothouse.store.rows import observation_from_row, score_from_row, trace_from_row
from pilothouse.store.sql import SqlStore

__all__ = ["OutlineSpan", "TraceOutline", "TraceViewQueries"]


class OutlineSpan(NamedTuple):
    """A span as the tree shows it: no input, output or attributes. The outline holds database rows
    with these fields in this order (read them by position or unpacking: a trace has thousands)."""

    id: str
    parent_id: str | None
    kind: str  # an ObservationKind's value
    name: str
    start_ns: int
    end_ns: int
    status: str  # a Status's value
    model: str | None  # the model that answered, else the one asked for
    tokens: int  # input + output


@dataclass(frozen=True, slots=True)
class TraceOutline:
    """A trace, its spans in start order (outline only) and its scores."""

    trace: Trace
    spans: list[OutlineSpan]
    scores: list[Score]
    older: str | None  # the id of the trace that started just before this one in the project
    newer: str | None  # and just after
    root_span_id: str | None = None


class TraceViewQueries:
    """The trace view's bounded reads."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def outline(self, project_id: str, trace_id: str) -> TraceOutline | None:
        """The trace with every span's outline, its scores and its neighbours; None if unknown here."""
        c = t.traces.c
        s = t.spans.c
        with self.store.engine.connect() as conn:
            row = conn.execute(select(t.traces).where(c.project_id == project_id, c.id == trace_id)).first()
            if row is None:
                return None
            span_rows = conn.execute(
                select(
                    s.span_id,
                    s.parent_id,
                    s.kind,
                    s.name,
                    s.start_ns,
                    s.end_ns,
                    s.status,
                    func.coalesce(s.model, s.request_model),
                    func.coalesce(s.input_tokens, 0) + func.coalesce(s.output_tokens, 0),
                )
                .where(s.trace_pk == row.pk)
                .order_by(s.start_ns, s.pk)
            ).all()
            score_rows = conn.execute(
                select(t.scores)
                .where(t.scores.c.project_id == project_id, t.scores.c.trace_id == trace_id)
                .order_by(t.scores.c.created_ns)
            )
            scores = [score_from_row(r._mapping) for r in score_rows]
            here = tuple_(c.start_ns, c.pk)
            older = conn.execute(
                select(c.id)
                .where(c.project_id == project_id, here < tuple_(row.start_ns, row.pk))
                .order_by(c.start_ns.desc(), c.pk.desc())
                .limit(1)
            ).scalar()
            newer = conn.execute(
                select(c.id)
                .where(c.project_id == project_id, here > tuple_(row.start_ns, row.pk))
                .order_by(c.start_ns, c.pk)
                .limit(1)
            ).scalar()
        spans = cast(list[OutlineSpan], span_rows)  # rows unpack as OutlineSpan's fields, in its order
        return TraceOutline(trace_from_row(row._mapping), spans, scores, older, newer, row.root_span_id)

    def observation(self, project_id: str, trace_id: str, span_id: str) -> Observation | None:
        """One span of a trace of this project, whole; None if there is none."""
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(t.spans)
                .join(t.traces, t.traces.c.pk == t.spans.c.trace_pk)
                .where(
                    t.traces.c.project_id == project_id,
                    t.traces.c.id == trace_id,
                    t.spans.c.span_id == span_id,
                )
            ).first()
        return None if row is None else observation_from_row(row._mapping, trace_id)

    def trace_start_and_scores(self, project_id: str, trace_id: str) -> tuple[int, list[Score]]:
        """When the trace started (0 if unknown here) and its scores, for one span's detail."""
        with self.store.engine.connect() as conn:
            start = conn.execute(
                select(t.traces.c.start_ns).where(
                    t.traces.c.project_id == project_id, t.traces.c.id == trace_id
                )
            ).scalar()
            rows = conn.execute(
                select(t.scores)
                .where(t.scores.c.project_id == project_id, t.scores.c.trace_id == trace_id)
                .order_by(t.scores.c.created_ns)
            )
            scores = [score_from_row(r._mapping) for r in rows]
        return int(start or 0), scores
