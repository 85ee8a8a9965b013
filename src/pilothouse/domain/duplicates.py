"""One model call described by two spans counts its tokens and cost once: the one rule, used both
where an export is normalised (:func:`count_calls_once`, server/ingest.py) and where a batch is
stored against the calls already stored (:func:`duplicate_calls`, store/sql.py).

Two spans describe the same call when one model-call span is the direct child of the other (two
instrumentations of one client call: OpenInference's Anthropic wrapper around the Anthropic SDK's
own span, Traceloop with the SDK's spans; or an instrumented client calling this gateway with its
``traceparent``, the gateway's span then the child), or, within one export, when their times
overlap and they give the same ``gen_ai.response.id`` or (siblings) the same model, input and output
(two calls made one after the other may share an id in a replay or a test, but cannot overlap).

- Within one export the duplicate keeps its place in the tree, its messages and its attributes; its
  usage and cost are emptied (cost 0), and ``pilothouse.usage.counted_in`` names the span that
  counts it.
- Across exports (the spans arrive in different requests: an exporter that sends each span as it
  ends, or the gateway's own record and the client's export) both spans are stored as sent, and the
  one received second is left out of the trace totals and rollups; in one batch the gateway's span
  counts (it holds the billed cost).

Pure: the store says which model calls of the batch's traces it holds already."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pilothouse.domain.traces import Cost, Observation, SpanRecord, Usage

__all__ = ["COUNTED_IN", "StoredCall", "count_calls_once", "duplicate_calls", "is_call"]

COUNTED_IN = "pilothouse.usage.counted_in"
RESPONSE_ID = "gen_ai.response.id"


def count_calls_once(records: Sequence[SpanRecord]) -> int:
    """Empty the usage of every span that repeats another's model call (in place); how many."""
    calls = [r.observation for r in records if r.observation.kind.is_model_call]
    if len(calls) < 2:
        return 0
    # Both rules pair spans of one trace: a call alone in its trace is nobody's duplicate (an export
    # of many single-call traces, the commonest, skips the keys: the texts' hashes above all).
    per_trace = Counter(o.trace_id for o in calls)
    if len(per_trace) < len(calls):
        calls = [o for o in calls if per_trace[o.trace_id] > 1]
    else:
        return 0
    # read before any is emptied: a chain of three spans of one call counts once, at its top
    by_id = {(o.trace_id, o.id): o for o in calls if not o.usage.is_empty}
    marked = 0
    seen: dict[tuple[str, ...], list[Observation]] = {}
    for o in calls:
        if o.usage.is_empty:
            continue
        parent = by_id.get((o.trace_id, o.parent_id or ""))
        if parent is not None:
            marked += _mark(o, parent)
            continue
        twin = None
        for key in _keys(o):
            same = seen.setdefault(key, [])
            twin = twin or next((t for t in same if t.start_ns < o.end_ns and o.start_ns < t.end_ns), None)
            same.append(o)
        if twin is not None:
            marked += _mark(o, twin)
    return marked


def _keys(o: Observation) -> list[tuple[str, ...]]:
    """What two spans of one call share: the response id, or (siblings) model, input and output."""
    keys: list[tuple[str, ...]] = []
    response_id = o.attributes.get(RESPONSE_ID)
    if isinstance(response_id, str) and response_id:
        keys.append(("id", o.trace_id, response_id))
    if o.output:
        keys.append(("io", o.trace_id, o.parent_id or "", o.model or "", o.input or "", o.output))
    return keys


def _mark(duplicate: Observation, counted: Observation) -> int:
    duplicate.usage = Usage()
    duplicate.cost = Cost({})  # counted in the other span: 0 here, not "unpriced"
    duplicate.attributes[COUNTED_IN] = counted.id
    return 1


# -- across exports: the batch against the calls already stored -------------------------------------

SpanKey = tuple[str, str, str]  # project, trace id, span id


@dataclass(frozen=True, slots=True)
class StoredCall:
    """A model call already stored (and counted): where it is, its parent, whether the gateway made it."""

    project_id: str
    trace_id: str
    span_id: str
    parent_id: str | None
    metered: bool
    model_call: bool = True  # a model-call span (else a span that only carries usage)
    counted: bool = True  # its usage is in the sums (False: emptied, counted in another span)


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
    out |= _exported_apart(calls, stored)
    return out


def _exported_apart(calls: Sequence[SpanRecord], stored: Iterable[StoredCall]) -> set[SpanKey]:
    """Two instrumentations of one client call whose spans came in different exports: a model call
    of the batch (not the gateway's) whose direct parent or child is a stored, counted model call
    (not the gateway's: that case is :func:`duplicate_calls`' own) is counted there already."""
    models: set[SpanKey] = set()
    parents: set[SpanKey] = set()
    for s in stored:
        if s.model_call and s.counted and not s.metered:
            models.add((s.project_id, s.trace_id, s.span_id))
            if s.parent_id:
                parents.add((s.project_id, s.trace_id, s.parent_id))
    if not models:
        return set()
    out: set[SpanKey] = set()
    for r in calls:
        o = r.observation
        if r.metered or not o.kind.is_model_call or o.usage.is_empty:
            continue
        key = (r.project_id, o.trace_id, o.id)
        if key in parents or (o.parent_id and (r.project_id, o.trace_id, o.parent_id) in models):
            out.add(key)
    return out
