"""Traces written straight into a store for the review tests: a root span with the question and the
answer, and a retrieval span with the passage."""

from __future__ import annotations

import uuid

from pilothouse.domain.traces import Observation, ObservationKind, SpanRecord, TraceAttributes
from pilothouse.store.sql import SqlStore


def write_trace(
    store: SqlStore, project: str, question: str, answer: str, *, name: str = "qa", at: int = 0
) -> str:
    """A stored trace of ``project``; returns its id."""
    trace_id = uuid.uuid4().hex
    start = 1_700_000_000_000_000_000 + at * 1_000_000
    root = Observation(
        trace_id=trace_id, id=uuid.uuid4().hex[:16], name=name, start_ns=start, end_ns=start + 5_000_000,
        input=question, output=answer,
    )  # fmt: skip
    passage = Observation(
        trace_id=trace_id, id=uuid.uuid4().hex[:16], name="search", start_ns=start + 1, end_ns=start + 2,
        kind=ObservationKind.RETRIEVAL, parent_id=root.id, output="Paris is the capital of France.",
    )  # fmt: skip
    store.write_spans(
        [
            SpanRecord(project, root, TraceAttributes(name=name)),
            SpanRecord(project, passage, TraceAttributes()),
        ]
    )
    return trace_id
