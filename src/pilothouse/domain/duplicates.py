"""A model call traced twice: by the client's instrumentation (an OpenAI or GenAI span) and by this
server's gateway, which the client called with its ``traceparent``, so that the gateway's span is a
child of the client's. Both spans are stored (the trace shows them), but the call's tokens and cost
count once: in the trace totals and the rollups, whichever of the two is received second is left
out (the gateway's when both come in one batch, the client's then).

Pure: the store says which model calls of the batch's traces it holds already."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pilothouse.domain.traces import SpanRecord

__all__ = ["StoredCall", "duplicate_calls", "is_call"]

SpanKey = tuple[str, str, str]  # project, trace id, span id


@dataclass(frozen=True, slots=True)
class StoredCall:
    """A model call already stored (and counted): where it is, its parent, whether the gateway made it."""

    project_id: str
    trace_id: str
    span_id: str
    parent_id: str | None
    metered: bool


def is_call(record: SpanRecord) -> bool:
    """True for a span the rollups count: a model call, or any span with token usage."""
    o = record.observation
    return o.kind.is_model_call or not o.usage.is_empty


def duplicate_calls(records: Sequence[SpanRecord], stored: Iterable[StoredCall]) -> set[SpanKey]:
    """The spans of ``records`` whose call is already counted (stored before, or in this batch): a
    client's model call whose child is the gateway's span of the same call, or the reverse."""
    calls = [r for r in records if is_call(r)]
    if not calls:
        return set()
    client_calls: dict[SpanKey, SpanRecord] = {}  # unmetered calls of the batch
    gateway_parents: set[SpanKey] = set()  # (project, trace, parent) of the gateway's calls
    stored_client: set[SpanKey] = set()
    stored_gateway_parents: set[SpanKey] = set()
    for s in stored:
        if s.metered and s.parent_id:
            stored_gateway_parents.add((s.project_id, s.trace_id, s.parent_id))
        elif not s.metered:
            stored_client.add((s.project_id, s.trace_id, s.span_id))
    for r in calls:
        o = r.observation
        if r.metered:
            if o.parent_id:
                gateway_parents.add((r.project_id, o.trace_id, o.parent_id))
        else:
            client_calls[(r.project_id, o.trace_id, o.id)] = r
    out: set[SpanKey] = set()
    for key in client_calls:
        if key in gateway_parents or key in stored_gateway_parents:
            out.add(key)  # the gateway's span (this batch or stored) counts the call
    for r in calls:
        o = r.observation
        if r.metered and o.parent_id and (r.project_id, o.trace_id, o.parent_id) in stored_client:
            out.add((r.project_id, o.trace_id, o.id))  # the client's span was counted first
    return out
