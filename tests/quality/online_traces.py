"""Stored traces for the online evaluator tests: real span records through the store's writer."""

from __future__ import annotations

import time
import uuid
from typing import Any

from pilothouse.domain.traces import Observation, ObservationKind, SpanRecord, TraceAttributes
from pilothouse.store.sql import SqlStore


def store_trace(
    store: SqlStore,
    *,
    project: str = "default",
    name: str = "chat",
    model: str = "gpt-4o-mini",
    request_model: str | None = None,
    output: str = "Paris is the capital of France.",
    tags: tuple[str, ...] = (),
    metadata: dict[str, Any] | None = None,
    span_name: str | None = None,
    start_ns: int | None = None,
) -> str:
    """Store one trace (a root span and a generation) and return its id."""
    trace_id = uuid.uuid4().hex
    start = start_ns if start_ns is not None else time.time_ns()
    root = Observation(
        trace_id,
        uuid.uuid4().hex[:16],
        span_name or name,
        start,
        start + 1_000_000,
        input="What is the capital of France?",
        output=output,
    )
    generation = Observation(
        trace_id,
        uuid.uuid4().hex[:16],
        f"chat {model}",
        start,
        start + 900_000,
        kind=ObservationKind.GENERATION,
        parent_id=root.id,
        model=model,
        request_model=request_model or model,
    )
    attributes = TraceAttributes(name=name, tags=tags, metadata=metadata or {})
    store.write_spans(
        [SpanRecord(project, root, attributes), SpanRecord(project, generation, TraceAttributes())]
    )
    return trace_id
