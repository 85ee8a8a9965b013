"""One model call described by two spans: count its tokens and cost once.

Two instrumentations may both trace the same call: OpenInference's Anthropic wrapper around the
Anthropic SDK's own span, Traceloop with the SDK's spans, or a framework span around a client
span. Each reports the call's usage; summed, the trace would count the call twice.

A model-call span is a duplicate of another model-call span of its export when it is its direct
child, or when their times overlap and they give the same ``gen_ai.response.id`` or (siblings)
the same model, input and output (two calls made one after the other may share an id in a replay
or a test, but cannot overlap). The duplicate keeps
its place in the tree, its messages and its attributes; its usage and cost move out of the sums:
they are emptied (cost 0), and ``pilothouse.usage.counted_in`` names the span that counts it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pilothouse.domain.traces import Cost, Observation, SpanRecord, Usage

COUNTED_IN = "pilothouse.usage.counted_in"
RESPONSE_ID = "gen_ai.response.id"


def count_calls_once(records: Sequence[SpanRecord]) -> int:
    """Empty the usage of every span that repeats another's model call (in place); how many."""
    calls = [r.observation for r in records if r.observation.kind.is_model_call]
    if len(calls) < 2:
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
