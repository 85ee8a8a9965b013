"""OTLP logs (``POST /v1/logs``): GenAI log events joined to their span.

Instrumentations in the GenAI ``event_only`` mode (and older openai-v2 releases) send the message
content as OTel log records (``gen_ai.user.message``, ``gen_ai.choice``,
``gen_ai.client.inference.operation.details``, ...) carrying the trace and span id of the model
call. Each such record becomes an ``event`` observation, a child of that span, whose input (or
output, for ``gen_ai.choice``) is the record's body; the normaliser
reads the ``gen_ai.input.messages`` / ``gen_ai.output.messages`` attributes of the details event as
it reads them on spans. Other log records (no span, or not a ``gen_ai.*`` event) are not kept.
"""

from __future__ import annotations

import hashlib
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pilothouse.tracing.otlp import DecodeLimits, OtlpDecodeError, OtlpTooLarge, RawSpan, any_value

_OUTPUT_EVENTS = frozenset({"gen_ai.choice"})  # an assistant message is part of the request


def decode_logs(body: bytes, limits: DecodeLimits) -> tuple[list[RawSpan], int]:
    """(the GenAI events of a protobuf ``ExportLogsServiceRequest`` as spans, log records left out)."""
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError) as exc:
        raise OtlpDecodeError(f"not an OTLP ExportLogsServiceRequest: {exc}") from exc
    spans: list[RawSpan] = []
    skipped = 0
    for resource_logs in request.resource_logs:
        resource = _attributes(resource_logs.resource.attributes, limits)
        for scope_logs in resource_logs.scope_logs:
            for index, record in enumerate(scope_logs.log_records):
                name = record.event_name or _event_name(record.attributes)
                if not name.startswith("gen_ai.") or len(record.trace_id) != 16 or len(record.span_id) != 8:
                    skipped += 1
                    continue
                if len(spans) >= limits.export_spans:
                    raise OtlpTooLarge(f"more than {limits.export_spans} log records in one export")
                spans.append(_event_span(record, name, index, resource, scope_logs.scope.name, limits))
    return spans, skipped


def _event_name(attributes: Any) -> str:
    for kv in attributes:
        if kv.key == "event.name":
            return str(kv.value.string_value)
    return ""


def _attributes(attributes: Any, limits: DecodeLimits) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in attributes[: limits.span_attributes]:
        if len(kv.key.encode()) <= limits.key_bytes:
            out[kv.key] = _bounded(any_value(kv.value), limits)
    return out


def _bounded(value: Any, limits: DecodeLimits) -> Any:
    if isinstance(value, str) and len(value) > limits.value_bytes:
        return value[: limits.value_bytes]
    return value


def _event_span(
    record: Any, name: str, index: int, resource: dict[str, Any], scope: str, limits: DecodeLimits
) -> RawSpan:
    trace_id, parent_id = record.trace_id.hex(), record.span_id.hex()
    time_ns = record.time_unix_nano or record.observed_time_unix_nano
    seed = f"{trace_id}:{parent_id}:{name}:{time_ns}:{index}".encode()
    attributes = _attributes(record.attributes, limits)
    attributes["pilothouse.observation.kind"] = "event"
    if record.HasField("body"):
        body = _bounded(any_value(record.body), limits)
        attributes["pilothouse.output" if name in _OUTPUT_EVENTS else "pilothouse.input"] = body
    return RawSpan(
        trace_id=trace_id,
        span_id=hashlib.blake2b(seed, digest_size=8).hexdigest(),
        parent_id=parent_id,
        name=name,
        start_ns=time_ns,
        end_ns=time_ns,
        status_code=0,
        status_message="",
        attributes=attributes,
        resource=resource,
        scope=scope,
    )
