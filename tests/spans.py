"""Building OTLP export requests in tests (the wire format the collector receives)."""

from __future__ import annotations

import os
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def new_trace_id() -> bytes:
    return os.urandom(16)


def new_span_id() -> bytes:
    return os.urandom(8)


def otlp_span(
    name: str,
    attributes: dict[str, Any],
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent_id: bytes | None = None,
    start_ns: int | None = None,
    duration_ms: float = 100.0,
    error: bool = False,
) -> Span:
    start = start_ns if start_ns is not None else time.time_ns()
    return Span(
        trace_id=trace_id or new_trace_id(),
        span_id=span_id or new_span_id(),
        parent_span_id=parent_id or b"",
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(duration_ms * 1e6),
        attributes=[KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()],
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK),
    )


def export_request(spans: list[Span], resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for k, v in (resource or {"service.name": "test"}).items():
        rs.resource.attributes.add(key=k, value=any_value(v))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    ss.spans.extend(spans)
    return request


def llm_attributes(
    model: str = "gpt-4o-mini", prompt: int = 20, completion: int = 10, **extra: Any
) -> dict[str, Any]:
    """OpenInference attributes of one LLM call."""
    return {
        "openinference.span.kind": "LLM",
        "llm.model_name": model,
        "llm.token_count.prompt": prompt,
        "llm.token_count.completion": completion,
        "llm.token_count.total": prompt + completion,
        "input.value": "What is the capital of France?",
        "output.value": "Paris.",
        **extra,
    }
