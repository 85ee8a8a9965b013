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
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pilothouse.tracing.otlp import (
    MAX_TIME_NS,
    DecodeLimits,
    OtlpDecodeError,
    OtlpTooLarge,
    RawSpan,
    SpanCounts,
    count_values,
    limited_attributes,
    limited_value,
    truncated,
    value_count,
)

_OUTPUT_EVENTS = frozenset({"gen_ai.choice"})  # an assistant message is part of the request


@dataclass(frozen=True, slots=True)
class DecodedLogs:
    """What a log export held: its GenAI events as spans, the records left out (not GenAI events),
    and the records rejected (times that cannot be stored) with the first one's reason."""

    spans: list[RawSpan]
    skipped: int = 0
    rejected: int = 0
    reason: str | None = None


def decode_logs(body: bytes, limits: DecodeLimits) -> DecodedLogs:
    """The GenAI events of a protobuf ``ExportLogsServiceRequest``, checked as spans are: times
    within 1970-2200 (a record outside is rejected alone), the attribute values of the whole export
    (bodies included) counted against ``export_values`` (413 past it), strings and bytes cut to
    ``value_bytes`` at any depth, attribute keys past ``key_bytes`` left out."""
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError) as exc:  # upb's words name its internals, not a field
        raise OtlpDecodeError(
            "body is not an OTLP ExportLogsServiceRequest protobuf (the wire data does not parse)"
        ) from exc
    counts = SpanCounts()
    for resource_logs in request.resource_logs:
        counts.values += count_values(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                counts.values += count_values(record.attributes) + value_count(record.body)
    counts.enforce(limits)  # before any value is made: a flood of tiny values is refused unread
    spans: list[RawSpan] = []
    skipped = 0
    for resource_logs in request.resource_logs:
        resource = limited_attributes(resource_logs.resource.attributes, limits)
        for scope_logs in resource_logs.scope_logs:
            for index, record in enumerate(scope_logs.log_records):
                name = record.event_name or _event_name(record.attributes)
                if not name.startswith("gen_ai.") or len(record.trace_id) != 16 or len(record.span_id) != 8:
                    skipped += 1
                    continue
                time_ns = record.time_unix_nano or record.observed_time_unix_nano
                if not 0 <= time_ns <= MAX_TIME_NS:
                    counts.reject(f"log record {index}: time_unix_nano {time_ns} is outside 1970-2200")
                    continue
                if len(spans) >= limits.export_spans:
                    raise OtlpTooLarge(f"more than {limits.export_spans} log records in one export")
                spans.append(_event_span(record, name, index, resource, scope_logs.scope.name, limits))
    return DecodedLogs(spans, skipped, counts.rejected, counts.reason)


def _event_name(attributes: Any) -> str:
    for kv in attributes:
        if kv.key == "event.name":
            return str(kv.value.string_value)
    return ""


def _event_span(
    record: Any, name: str, index: int, resource: dict[str, Any], scope: str, limits: DecodeLimits
) -> RawSpan:
    trace_id, parent_id = record.trace_id.hex(), record.span_id.hex()
    time_ns = record.time_unix_nano or record.observed_time_unix_nano
    seed = f"{trace_id}:{parent_id}:{name}:{time_ns}:{index}".encode()
    attributes = limited_attributes(record.attributes, limits)
    attributes["pilothouse.observation.kind"] = "event"
    if record.HasField("body"):
        body = limited_value(record.body, limits)
        attributes["pilothouse.output" if name in _OUTPUT_EVENTS else "pilothouse.input"] = body
    return RawSpan(
        trace_id=trace_id,
        span_id=hashlib.blake2b(seed, digest_size=8).hexdigest(),
        parent_id=parent_id,
        name=truncated(name, limits.key_bytes) or name,
        start_ns=time_ns,
        end_ns=time_ns,
        status_code=0,
        status_message="",
        attributes=attributes,
        resource=resource,
        scope=scope,
    )
