"""OTLP/JSON decoding: the JSON mapping of ``ExportTraceServiceRequest`` (hex or base64 ids,
camelCase or snake_case keys, int64 as strings) into the plain spans of :mod:`pilothouse.tracing.otlp`,
checked field by field with the same limits and rules as protobuf. Every refusal is a sentence of
ours that names the field (never a Python exception's text)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from pilothouse.tracing.otlp import (
    DEFAULT_LIMITS,
    MAX_TIME_NS,
    DecodeLimits,
    OtlpDecodeError,
    OtlpTooLarge,
    RawEvent,
    RawSpan,
    SpanCounts,
    clamped_end,
    key_too_long,
    mark,
    truncated,
)

# -- JSON (the OTLP/JSON mapping: hex ids, camelCase or snake_case keys, int64 as strings) ----------


def _get(obj: dict[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    return obj.get(camel, obj.get(snake, default))


class _JsonReader:
    """Reads the attributes of one export within its limits, counting its values."""

    def __init__(self, limits: DecodeLimits, *, clamp: bool = True) -> None:
        self.limits = limits
        self.clamp = clamp  # move the end of a span that ends before it starts (clamped_end)
        self.values = 0
        self.cut = 0
        self.dropped = 0  # nested kvlist keys left out (too long) in the attribute being read

    def count(self, n: int) -> None:
        """Count ``n`` values that are not attributes (a span's events and links)."""
        self.values += n
        if self.values > self.limits.export_values:
            raise OtlpTooLarge(
                f"Export has more than {self.limits.export_values} attribute values per request."
            )

    def any(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise OtlpDecodeError("attribute value must be an AnyValue object")
        self.values += 1
        if self.values > self.limits.export_values:
            raise OtlpTooLarge(
                f"Export has more than {self.limits.export_values} attribute values per request."
            )
        for camel, snake in (("stringValue", "string_value"), ("bytesValue", "bytes_value")):
            if camel in value or snake in value:
                text = _get(value, camel, snake)
                if not isinstance(text, str):
                    raise OtlpDecodeError(f"{camel} must be a string")
                short = truncated(text, self.limits.value_bytes)
                if short is None:
                    return text
                self.cut += 1
                return short
        if "boolValue" in value or "bool_value" in value:
            flag = _get(value, "boolValue", "bool_value")
            if not isinstance(flag, bool):
                raise OtlpDecodeError("boolValue must be true or false")
            return flag
        if "intValue" in value or "int_value" in value:
            return _json_int(_get(value, "intValue", "int_value"))
        if "doubleValue" in value or "double_value" in value:
            return _json_double(_get(value, "doubleValue", "double_value"))
        if "arrayValue" in value or "array_value" in value:
            items = _object(_get(value, "arrayValue", "array_value"), "arrayValue").get("values", [])
            return [self.any(v) for v in _list(items, "arrayValue.values")]
        if "kvlistValue" in value or "kvlist_value" in value:
            items = _object(_get(value, "kvlistValue", "kvlist_value"), "kvlistValue").get("values", [])
            out: dict[str, Any] = {}
            for kv in _list(items, "kvlistValue.values"):
                key = _key(kv)
                if key_too_long(key, self.limits.key_bytes):
                    self.dropped += 1
                    continue
                out[key] = self.any(kv.get("value", {}))
            return out
        return None

    def attributes(self, items: Any) -> dict[str, Any]:
        cap, key_limit = self.limits.span_attributes, self.limits.key_bytes
        out: dict[str, Any] = {}
        self.cut, self.dropped, dropped = 0, 0, 0
        for kv in _list(items, "attributes"):
            key = _key(kv)
            cut, nested = self.cut, self.dropped
            value = self.any(kv.get("value", {}))  # checked and counted, kept or not
            if key_too_long(key, key_limit) or (len(out) >= cap and key not in out):
                dropped += 1
                self.cut, self.dropped = cut, nested  # a value left out is not one cut short
                continue
            out[key] = value
        return mark(out, self.cut, dropped + self.dropped)


def _list(items: Any, what: str) -> list[Any]:
    if not isinstance(items, list):
        raise OtlpDecodeError(f"{what} must be a list")
    return items


def _object(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object (absent or null: an empty one); else a 400 naming ``what``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OtlpDecodeError(f"{what} must be an object")
    return value


def _json_int(raw: Any) -> int:
    """An ``intValue``: an integer, or a string of one, within int64."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise OtlpDecodeError("intValue must be an integer or a string of one")
    if isinstance(raw, str):
        text = raw.strip()
        digits = text[1:] if text[:1] in ("-", "+") else text
        if not digits.isascii() or not digits.isdigit() or len(digits) > 20:
            raise OtlpDecodeError(f"intValue {raw[:40]!r} is not a whole number within int64")
    number = int(raw)
    if not -(2**63) <= number < 2**63:
        raise OtlpDecodeError(f"intValue {str(number)[:40]} is outside int64")
    return number


def _json_double(raw: Any) -> float:
    """A ``doubleValue``: a number, or a string of one (``NaN``, ``Infinity`` and ``-Infinity`` too)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise OtlpDecodeError("doubleValue must be a number")
    try:
        return float(raw)
    except (ValueError, OverflowError):
        raise OtlpDecodeError(f"doubleValue {str(raw)[:40]!r} is not a number") from None


def _key(kv: Any) -> str:
    if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
        raise OtlpDecodeError("an attribute must be an object with a string key")
    return str(kv["key"])


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
    try:  # some producers send base64 (the protobuf JSON mapping) instead of hex: case matters there
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise OtlpDecodeError(f"{what} {text!r} is not {size} bytes of hex")
    return raw.hex()


@dataclass(slots=True)
class DecodedJson:
    """The accepted spans of an OTLP/JSON export, and what was rejected."""

    spans: list[RawSpan]
    rejected: int = 0
    reason: str | None = None


def decode_json(body: bytes, limits: DecodeLimits = DEFAULT_LIMITS, *, clamp: bool = True) -> DecodedJson:
    """Spans of an OTLP/JSON ``ExportTraceServiceRequest``. A span with a field of the wrong type or
    a time outside 1970-2200 is rejected alone; ids that are not hex (or base64) of the right length
    and a body that is not an export refuse the whole body (:class:`OtlpDecodeError`, its message a
    sentence naming the field). ``clamp``: a span that ends before it starts ends at its start
    (:func:`clamped_end`); off where the spans are written back as protobuf for the C reader."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpDecodeError(f"body is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(request, dict):
        raise OtlpDecodeError("body must be a JSON object with resourceSpans")
    try:
        return _read_json(request, limits, clamp)
    except RecursionError:
        raise OtlpDecodeError("attribute values are nested too deep") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, OtlpDecodeError):
            raise
        # every field is checked above with a sentence of its own; this names no Python internals
        raise OtlpDecodeError(
            "body is not an OTLP trace export: a field has a value of the wrong type"
        ) from exc


def _read_json(request: dict[str, Any], limits: DecodeLimits, clamp: bool = True) -> DecodedJson:
    reader = _JsonReader(limits, clamp=clamp)
    counts = SpanCounts()
    spans: list[RawSpan] = []
    for resource_spans in _list(_get(request, "resourceSpans", "resource_spans", []), "resourceSpans"):
        resource_spans = _object(resource_spans, "an item of resourceSpans")
        resource_object = _object(resource_spans.get("resource"), "resource")
        resource = reader.attributes(resource_object.get("attributes", []))
        for scope_spans in _list(_get(resource_spans, "scopeSpans", "scope_spans", []), "scopeSpans"):
            scope_spans = _object(scope_spans, "an item of scopeSpans")
            scope = _object(scope_spans.get("scope"), "scope").get("name", "")
            if not isinstance(scope, str):
                raise OtlpDecodeError("scope.name must be a string")
            for span in _list(scope_spans.get("spans", []), "spans"):
                if not isinstance(span, dict):
                    raise OtlpDecodeError("a span must be an object")
                span_id = _json_id(_get(span, "spanId", "span_id"), 8, "spanId")
                trace_id = _json_id(_get(span, "traceId", "trace_id"), 16, "traceId")
                parent = _get(span, "parentSpanId", "parent_span_id", "")
                parent_id = _json_id(parent, 8, "parentSpanId") if parent else None
                if counts.accepted + counts.rejected >= limits.export_spans:
                    raise OtlpTooLarge(f"Export has more than {limits.export_spans} spans per request.")
                try:
                    raw = _json_span(span, trace_id, span_id, parent_id, resource, scope, reader)
                except OtlpTooLarge:
                    raise
                except OtlpDecodeError as exc:
                    counts.reject(f"span {span_id}: {exc}")
                    continue
                counts.accepted += 1
                spans.append(raw)
    return DecodedJson(spans, counts.rejected, counts.reason)


UNLIMITED_ATTRIBUTES = 1 << 62  # for a transcoded export: the reader of the protobuf applies the limits


def json_to_protobuf(body: bytes, limits: DecodeLimits) -> tuple[bytes, int, str | None]:
    """An OTLP/JSON export checked as :func:`decode_json` checks it, then written as protobuf: its
    accepted spans, with the spans rejected and the first one's reason. Attributes are left whole:
    whoever reads the protobuf (:func:`iter_checked`) applies the attribute limits, as for any
    protobuf export. Run by the collector in a process of its own for large bodies
    (``server/json_decoder.py``): parsing a large JSON document holds the GIL throughout."""
    whole = DecodeLimits(
        UNLIMITED_ATTRIBUTES,
        UNLIMITED_ATTRIBUTES,
        limits.export_spans,
        limits.export_values,
        UNLIMITED_ATTRIBUTES,
    )
    decoded = decode_json(body, whole, clamp=False)
    request = ExportTraceServiceRequest()
    groups: dict[tuple[int, str], Any] = {}
    resources: dict[int, Any] = {}
    for raw in decoded.spans:
        key = (id(raw.resource), raw.scope)
        scope_spans = groups.get(key)
        if scope_spans is None:
            resource_spans = resources.get(id(raw.resource))
            if resource_spans is None:
                resource_spans = resources[id(raw.resource)] = request.resource_spans.add()
                _fill_attributes(resource_spans.resource.attributes, raw.resource)
            scope_spans = groups[key] = resource_spans.scope_spans.add()
            scope_spans.scope.name = raw.scope
        span = scope_spans.spans.add()
        span.trace_id = bytes.fromhex(raw.trace_id)
        span.span_id = bytes.fromhex(raw.span_id)
        if raw.parent_id:
            span.parent_span_id = bytes.fromhex(raw.parent_id)
        span.name = raw.name
        span.start_time_unix_nano = raw.start_ns
        span.end_time_unix_nano = raw.end_ns
        span.status.code = raw.status_code  # an open enum: any int32
        span.status.message = raw.status_message
        _fill_attributes(span.attributes, raw.attributes)
        for e in raw.events:
            event = span.events.add()
            event.name = e.name
            event.time_unix_nano = e.time_ns
            _fill_attributes(event.attributes, e.attributes)
    return request.SerializeToString(), decoded.rejected, decoded.reason


def _fill_attributes(target: Any, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        kv = target.add()
        kv.key = key
        _fill_value(kv.value, value)


def _fill_value(target: AnyValue, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, list):
        target.array_value.SetInParent()
        for item in value:
            _fill_value(target.array_value.values.add(), item)
    elif isinstance(value, dict):
        target.kvlist_value.SetInParent()
        _fill_attributes(target.kvlist_value.values, value)


def _json_time(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise OtlpDecodeError(f"{what} must be an integer (or a string of one)")
    try:
        number = int(value)
    except (ValueError, OverflowError):
        raise OtlpDecodeError(f"{what} {str(value)[:40]!r} is not an integer") from None
    if not 0 <= number <= MAX_TIME_NS:
        raise OtlpDecodeError(f"{what} {number} is outside 1970-2200")
    return number


def _json_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise OtlpDecodeError(f"{what} must be a string")
    return value


def _json_span(
    span: dict[str, Any],
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    resource: dict[str, Any],
    scope: str,
    reader: _JsonReader,
) -> RawSpan:
    status = span.get("status") or {}
    if not isinstance(status, dict):
        raise OtlpDecodeError("status must be an object")
    events = []
    given = [span.get("events"), span.get("links")]
    reader.count(sum(len(items) for items in given if isinstance(items, list)))
    for e in _list(span.get("events", []), "events"):
        if not isinstance(e, dict):
            raise OtlpDecodeError("an event must be an object")
        events.append(
            RawEvent(
                _json_text(e.get("name", ""), "event name"),
                _json_time(_get(e, "timeUnixNano", "time_unix_nano", 0), "event timeUnixNano"),
                reader.attributes(e.get("attributes", [])),
            )
        )
    start = _json_time(_get(span, "startTimeUnixNano", "start_time_unix_nano", 0), "startTimeUnixNano")
    end = _json_time(_get(span, "endTimeUnixNano", "end_time_unix_nano", 0), "endTimeUnixNano")
    name = _json_text(span.get("name", ""), "name")
    status_code = _status_code(status.get("code", 0))
    status_message = _json_text(status.get("message", ""), "status.message")
    attributes = reader.attributes(span.get("attributes", []))
    return RawSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        name=name,
        start_ns=start,
        end_ns=clamped_end(start, end, attributes) if reader.clamp else end,
        status_code=status_code,
        status_message=status_message,
        attributes=attributes,
        resource=resource,
        scope=scope,
        events=events,
    )


def _status_code(code: Any) -> int:
    if isinstance(code, str):
        return {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(code, 0)
    if isinstance(code, bool) or not isinstance(code, int) or not -(2**31) <= code < 2**31:
        raise OtlpDecodeError("status.code must be a status name or an int32")
    return code
