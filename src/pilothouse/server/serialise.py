"""JSON shapes of the query API (the same shapes the CLI prints with --json).

Amounts stay :class:`~pilothouse.domain.money.Money` in these shapes; :func:`json_default` writes them
as JSON numbers with Money's exact text (``0.00018``, never ``0.00017999999999999998`` or ``1.8e-05``).
"""

from __future__ import annotations

from typing import Any

import orjson

from pilothouse.domain.money import Money
from pilothouse.domain.queries import ModelMetrics, SessionSummary, TraceDetail, TraceSummary
from pilothouse.domain.timeparse import iso
from pilothouse.domain.traces import Observation, Score, Trace, Usage


def json_default(value: Any) -> Any:
    """orjson's ``default`` for what it does not know: Money as a JSON number with its exact text."""
    if isinstance(value, Money):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _json_or_text(value: Any) -> Any:
    return orjson.Fragment(str(value).encode()) if isinstance(value, Money) else str(value)


def dumps(value: Any, *, indent: bool = False) -> str:
    """JSON text for the CLI's ``--json`` output: Money as exact numbers, other unknown values as text."""
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(value, default=_json_or_text, option=option).decode()


def _maybe_json(text: str | None) -> Any:
    if text is None or text[:1] not in ("{", "["):
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def usage_json(usage: Usage) -> dict[str, int]:
    """Usage as ``{input, output, cache_read, cache_write, reasoning, total}`` (input = uncached)."""
    return {
        "input": usage.input,
        "output": usage.output,
        "cache_read": usage.cache_read,
        "cache_write": usage.cache_write,
        "reasoning": usage.reasoning,
        "total": usage.total,
    }


def trace_json(trace: Trace) -> dict[str, Any]:
    """A trace's summary fields."""
    return {
        "id": trace.id,
        "name": trace.name,
        "timestamp": iso(trace.start_ns),
        "start_time": iso(trace.start_ns),
        "end_time": iso(trace.end_ns),
        "latency_ms": round(trace.latency_ms, 3),
        "status": trace.status.value,
        "user_id": trace.user_id,
        "session_id": trace.session_id,
        "tags": list(trace.tags),
        "metadata": trace.metadata,
        "environment": trace.environment,
        "release": trace.release,
        "model": trace.model,
        "observation_count": trace.observation_count,
        "error_count": trace.error_count,
        "usage": {
            "input": trace.usage.input,
            "output": trace.usage.output,
            "total": trace.usage.total,
        },
        "cost_usd": trace.cost_usd,
    }


def trace_summary_json(item: TraceSummary) -> dict[str, Any]:
    """A row of the trace list."""
    return {**trace_json(item.trace), "input": item.input_preview, "output": item.output_preview}


def observation_json(o: Observation, depth: int = 0) -> dict[str, Any]:
    """One observation with its model-call fields."""
    return {
        "id": o.id,
        "trace_id": o.trace_id,
        "parent_id": o.parent_id,
        "depth": depth,
        "type": o.kind.value,
        "name": o.name,
        "start_time": iso(o.start_ns),
        "end_time": iso(o.end_ns),
        "latency_ms": round(o.duration_ns / 1e6, 3),
        "status": o.status.value,
        "status_message": o.status_message,
        "input": _maybe_json(o.input),
        "output": _maybe_json(o.output),
        "provider": o.provider,
        "request_model": o.request_model,
        "model": o.model,
        "model_parameters": o.model_parameters,
        "usage": usage_json(o.usage),
        "cost": None
        if o.cost is None
        else {
            "total": o.cost.total,
            "items": o.cost.items,
            "price_version": o.cost.price_version,
            "saved": o.cost.saved,
        },
        "ttft_ms": None if o.ttft_ns is None else round(o.ttft_ns / 1e6, 3),
        "prompt": None if o.prompt_name is None else {"name": o.prompt_name, "version": o.prompt_version},
        "attributes": o.attributes,
    }


def score_json(s: Score) -> dict[str, Any]:
    """A score."""
    return {
        "id": s.id,
        "trace_id": s.trace_id,
        "observation_id": s.observation_id,
        "name": s.name,
        "data_type": s.data_type.value,
        "value": s.value if s.string_value is None or s.data_type.value == "numeric" else s.string_value,
        "numeric_value": s.value,
        "source": s.source.value,
        "comment": s.comment,
        "author": s.author,
        "created_at": iso(s.created_ns),
    }


def tree_order(observations: list[Observation]) -> list[tuple[Observation, int]]:
    """Observations depth-first (children in start order) with their depth; orphans at depth 0."""
    ids = {o.id for o in observations}
    children: dict[str | None, list[Observation]] = {}
    for o in observations:
        parent = o.parent_id if o.parent_id in ids else None
        children.setdefault(parent, []).append(o)
    out: list[tuple[Observation, int]] = []
    stack = [(o, 0) for o in reversed(children.get(None, []))]
    while stack:
        o, depth = stack.pop()
        out.append((o, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(o.id, [])))
    return out


def trace_detail_json(detail: TraceDetail) -> dict[str, Any]:
    """A trace with its observations (depth-first, each with its depth) and scores."""
    return {
        **trace_json(detail.trace),
        "input": _maybe_json(detail.trace.input),
        "output": _maybe_json(detail.trace.output),
        "observations": [observation_json(o, d) for o, d in tree_order(detail.observations)],
        "scores": [score_json(s) for s in detail.scores],
    }


def session_json(s: SessionSummary) -> dict[str, Any]:
    """A session row."""
    return {
        "id": s.session_id,
        "trace_count": s.trace_count,
        "start_time": iso(s.start_ns),
        "end_time": iso(s.end_ns),
        "user_ids": list(s.user_ids),
        "total_tokens": s.total_tokens,
        "cost_usd": s.cost_usd,
    }


def model_metrics_json(m: ModelMetrics, time_text: str | None = None) -> dict[str, Any]:
    """A dashboard row: one model in one time bucket."""
    s = m.sums
    return {
        "time": time_text or iso(m.bucket_start_s * 1_000_000_000),
        "model": m.model,
        "count": s.count,
        "errors": s.errors,
        "usage": {
            "input": s.input_tokens,
            "output": s.output_tokens,
            "cache_read": s.cache_read_tokens,
            "cache_write": s.cache_write_tokens,
            "reasoning": s.reasoning_tokens,
            "total": s.input_tokens + s.output_tokens + s.cache_read_tokens + s.cache_write_tokens,
        },
        "cost_usd": s.cost_usd,
        "unpriced": s.unpriced,
        "latency_ms": {"avg": s.latency_ms_avg, "p50": m.latency_ms_p50, "p95": m.latency_ms_p95},
    }


def model_metrics_list_json(rows: list[ModelMetrics]) -> list[dict[str, Any]]:
    """Dashboard rows; each bucket's time is formatted once (rows of one bucket share it)."""
    times: dict[int, str] = {}
    out = []
    for m in rows:
        text = times.get(m.bucket_start_s)
        if text is None:
            text = times[m.bucket_start_s] = iso(m.bucket_start_s * 1_000_000_000)
        out.append(model_metrics_json(m, text))
    return out
