"""OTLP/HTTP decoding: protobuf or JSON ``ExportTraceServiceRequest`` bodies into plain spans.

Only decoding lives here; mapping the conventions onto the domain model is in ``conventions``.

Protobuf bodies are read by the C reader of ``pilothouse._speedups`` when it was built: it checks a
body and makes the spans without upb's message objects, on a step every exported span goes through
(measure it with ``python benchmarks/speedups.py``). Anything it does not take (malformed data, or a
legal rarity such as a message field given twice, which protobuf merges) goes to upb, which decides
and words the error. Its reference, and the fallback without it, is upb alone: :func:`parse_protobuf`
then :func:`iter_protobuf`, with the same results.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from pilothouse import _speedups

_reader = _speedups.otlp_reader  # None: upb reads every body


class OtlpDecodeError(ValueError):
    """The body is not a valid OTLP trace export; the message says why."""


@dataclass(slots=True)
class RawEvent:
    """A span event: name, time and attributes."""

    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(slots=True)
class RawSpan:
    """One decoded OTLP span with its resource and scope, ids in lowercase hex. (The C reader makes
    these and :class:`RawEvent` without calling ``__init__``: keep both plain field holders.)"""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    events: list[RawEvent] = field(default_factory=list)


def any_value(value: AnyValue) -> Any:
    """Python value of an OTLP AnyValue (arrays -> lists, kvlists -> dicts, bytes -> base64 text)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def decompress(body: bytes, encoding: str | None) -> bytes:
    """Undo ``Content-Encoding`` gzip/deflate; raises :class:`OtlpDecodeError` on a corrupt body."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, EOFError, zlib.error) as exc:
        raise OtlpDecodeError(f"body is not valid {encoding}: {exc}") from exc
    raise OtlpDecodeError(f"unsupported Content-Encoding {encoding!r} (use gzip or none)")


def parse_protobuf(body: bytes) -> tuple[ExportTraceServiceRequest, int]:
    """Parse and check a protobuf ``ExportTraceServiceRequest``; returns it with its span count.

    Cheap (the attributes are not read yet), so the collector can refuse a bad body before accepting
    it and leave the rest of the decoding to the batch writer (:func:`iter_protobuf`)."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise OtlpDecodeError(f"body is not an OTLP ExportTraceServiceRequest protobuf: {exc}") from exc
    count = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if (
                    len(span.trace_id) != 16
                    or len(span.span_id) != 8
                    or len(span.parent_span_id) not in (0, 8)
                ):
                    raise OtlpDecodeError(
                        f"span {span.name!r} has an invalid trace_id, span_id or parent_span_id"
                    )
                count += 1
    return request, count


@dataclass(slots=True)
class CheckedExport:
    """A protobuf export checked whole (:func:`check_protobuf`): its span count, and the body (taken
    by the C reader) or the parsed request (upb) that :func:`iter_checked` reads the spans from."""

    count: int
    body: bytes | None = None
    request: ExportTraceServiceRequest | None = None


def check_protobuf(body: bytes) -> CheckedExport:
    """Check a whole protobuf export; raises :class:`OtlpDecodeError` with the reason. Cheap: the
    spans are made later, by :func:`iter_checked` (off the request path)."""
    if _reader is not None:
        try:
            return CheckedExport(_reader.count(body), body=body)
        except ValueError:
            pass  # upb decides
    request, count = parse_protobuf(body)
    return CheckedExport(count, request=request)


def iter_checked(export: CheckedExport) -> Iterator[RawSpan]:
    """Spans of a checked export."""
    if export.body is not None:
        if _reader is not None:
            try:
                return iter(_reader.decode(export.body, RawSpan, RawEvent))
            except ValueError:  # not expected for a body count() took; upb then reads it
                pass
        return iter_protobuf(parse_protobuf(export.body)[0])
    assert export.request is not None
    return iter_protobuf(export.request)


def decode_protobuf(body: bytes) -> Iterator[RawSpan]:
    """Spans of a protobuf ``ExportTraceServiceRequest``."""
    return iter_checked(check_protobuf(body))


def _attributes(items: Any) -> dict[str, Any]:
    # Most values are non-empty strings: read those without asking which oneof is set.
    out = {}
    for kv in items:
        value = kv.value
        text = value.string_value
        out[kv.key] = text if text else any_value(value)
    return out


def iter_protobuf(request: ExportTraceServiceRequest) -> Iterator[RawSpan]:
    """Spans of a parsed (and checked, see :func:`parse_protobuf`) export request."""
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                parent = span.parent_span_id
                status = span.status
                events = span.events
                yield RawSpan(
                    span.trace_id.hex(),
                    span.span_id.hex(),
                    parent.hex() if parent else None,
                    span.name,
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    status.code,
                    status.message,
                    _attributes(span.attributes),
                    resource,
                    scope,
                    [RawEvent(e.name, e.time_unix_nano, _attributes(e.attributes)) for e in events]
                    if events
                    else [],
                )


# -- JSON (the OTLP/JSON mapping: hex ids, camelCase or snake_case keys, int64 as strings) ----------


def _get(obj: dict[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    return obj.get(camel, obj.get(snake, default))


def _json_any(value: dict[str, Any]) -> Any:
    if not isinstance(value, dict):
        raise OtlpDecodeError("attribute value must be an AnyValue object")
    for camel, snake in (("stringValue", "string_value"), ("boolValue", "bool_value")):
        if camel in value or snake in value:
            return _get(value, camel, snake)
    if "intValue" in value or "int_value" in value:
        number = int(_get(value, "intValue", "int_value"))
        if not -(2**63) <= number < 2**63:
            raise OtlpDecodeError(f"intValue {number} is outside int64")
        return number
    if "doubleValue" in value or "double_value" in value:
        return float(_get(value, "doubleValue", "double_value"))
    if "arrayValue" in value or "array_value" in value:
        return [_json_any(v) for v in (_get(value, "arrayValue", "array_value") or {}).get("values", [])]
    if "kvlistValue" in value or "kvlist_value" in value:
        return _json_attributes((_get(value, "kvlistValue", "kvlist_value") or {}).get("values", []))
    if "bytesValue" in value or "bytes_value" in value:
        return _get(value, "bytesValue", "bytes_value")
    return None


def _json_attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: _json_any(kv.get("value", {})) for kv in items}


def _json_id(value: Any, size: int, what: str) -> str:
    if not isinstance(value, str):
        raise OtlpDecodeError(f"{what} must be a hex string")
    text: str = value.lower()
    if len(text) == size * 2:
        try:
            bytes.fromhex(text)
            return text
        except ValueError:
            pass
    try:  # some producers send base64 (the protobuf JSON mapping) instead of hex
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise OtlpDecodeError(f"{what} {text!r} is not {size} bytes of hex")
    return raw.hex()


def decode_json(body: bytes) -> list[RawSpan]:
    """Spans of an OTLP/JSON ``ExportTraceServiceRequest``."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpDecodeError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise OtlpDecodeError("body must be a JSON object with resourceSpans")
    try:
        return list(_iter_json(request))
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        if isinstance(exc, OtlpDecodeError):
            raise
        raise OtlpDecodeError(f"body is not an OTLP trace export: {exc!r}") from exc


def _iter_json(request: dict[str, Any]) -> Iterator[RawSpan]:
    for resource_spans in _get(request, "resourceSpans", "resource_spans", []):
        resource = _json_attributes(resource_spans.get("resource", {}).get("attributes", []))
        for scope_spans in _get(resource_spans, "scopeSpans", "scope_spans", []):
            scope = (scope_spans.get("scope") or {}).get("name", "")
            for span in scope_spans.get("spans", []):
                parent = _get(span, "parentSpanId", "parent_span_id", "")
                status = span.get("status") or {}
                yield RawSpan(
                    trace_id=_json_id(_get(span, "traceId", "trace_id"), 16, "traceId"),
                    span_id=_json_id(_get(span, "spanId", "span_id"), 8, "spanId"),
                    parent_id=_json_id(parent, 8, "parentSpanId") if parent else None,
                    name=span.get("name", ""),
                    start_ns=int(_get(span, "startTimeUnixNano", "start_time_unix_nano", 0)),
                    end_ns=int(_get(span, "endTimeUnixNano", "end_time_unix_nano", 0)),
                    status_code=_status_code(status.get("code", 0)),
                    status_message=status.get("message", ""),
                    attributes=_json_attributes(span.get("attributes", [])),
                    resource=resource,
                    scope=scope,
                    events=[
                        RawEvent(
                            e.get("name", ""),
                            int(_get(e, "timeUnixNano", "time_unix_nano", 0)),
                            _json_attributes(e.get("attributes", [])),
                        )
                        for e in span.get("events", [])
                    ],
                )


def _status_code(code: Any) -> int:
    if isinstance(code, str):
        return {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(code, 0)
    return int(code)


def is_json(content_type: str | None) -> bool:
    """True for an OTLP/JSON body, False for protobuf (the default); raises for anything else."""
    media = (content_type or "application/x-protobuf").split(";")[0].strip().lower()
    if media == "application/json":
        return True
    if media in ("application/x-protobuf", "application/protobuf", "application/octet-stream"):
        return False
    raise OtlpDecodeError(
        f"unsupported Content-Type {media!r}: send application/x-protobuf or application/json"
    )
