"""OTLP/HTTP decoding: protobuf or JSON ``ExportTraceServiceRequest`` bodies into plain spans.

Only decoding lives here; mapping the conventions onto the domain model is in ``conventions``, and the
OTLP/JSON mapping in ``otlp_json`` (with the limits, markers and checks defined here).

Protobuf bodies are read by the C reader of ``pilothouse._speedups`` when it was built: it checks a
body and makes the spans without upb's message objects, on a step every exported span goes through
(measure it with ``python benchmarks/speedups.py``). Anything it does not take (malformed data, or a
legal rarity such as a message field given twice, which protobuf merges) goes to upb, which decides
and words the error. Its reference, and the fallback without it, is upb alone: :func:`parse_protobuf`
then :func:`iter_protobuf`, with the same results.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
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


class OtlpTooLarge(OtlpDecodeError):
    """The body is larger than a limit once decompressed or counted (413): the message says which."""


DECOMPRESS_CHUNK = 1 << 20  # output produced per step: memory stays at the cap, never past it
# gzip members one body may hold: exporters send one; each further member costs a copy of the rest of
# the body (zlib's unused_data), so 200,000 empty members in 4 MB held the loop for 30 s
MAX_GZIP_MEMBERS = 16
INLINE_STEPS = 8  # decompression steps run inline (with a budget) before the rest goes to a thread


def decompress(body: bytes, encoding: str | None, limit: int | None = None) -> bytes:
    """Undo ``Content-Encoding`` gzip/deflate as a stream, stopping past ``limit`` output bytes with
    :class:`OtlpTooLarge` (a gzip bomb never grows past the cap); raises :class:`OtlpDecodeError` on
    a corrupt body."""
    decoder = Decompression(body, encoding, limit)
    decoder.run(None)
    return decoder.result()


class Decompression:
    """A body being decompressed: :meth:`run` produces up to a given number of bytes (the collector
    decompresses small bodies inline and hands the rest of a large one to a thread), :meth:`result`
    is the whole output. gzip members given one after another are read as one body, as
    ``gzip.decompress`` reads them."""

    def __init__(self, body: bytes, encoding: str | None, limit: int | None) -> None:
        encoding = (encoding or "").strip().lower()
        if encoding not in ("", "identity", "gzip", "deflate"):
            raise OtlpDecodeError(f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or none)")
        self.encoding = encoding
        self.limit = limit
        self._wbits = 31 if encoding == "gzip" else zlib.MAX_WBITS  # deflate: the zlib format
        self._pending = body
        self._decoder: Any = None
        self._out: list[bytes] = []
        self._size = 0
        self._members = 0
        self.done = encoding in ("", "identity")
        if self.done:
            if limit is not None and len(body) > limit:
                raise self._too_large()
            self._out.append(body)

    def _too_large(self) -> OtlpTooLarge:
        return OtlpTooLarge(f"Decompressed body is larger than the {self.limit}-byte limit.")

    @property
    def size(self) -> int:
        """Bytes of output so far."""
        return self._size if self.encoding not in ("", "identity") else len(self._out[0])

    def run(self, budget: int | None) -> bool:
        """Decompress up to about ``budget`` more bytes (None: to the end); True when done."""
        produced = steps = 0
        try:
            while not self.done and (budget is None or (produced < budget and steps < INLINE_STEPS)):
                steps += 1
                if self._decoder is None:
                    self._members += 1
                    if self._members > MAX_GZIP_MEMBERS:
                        raise OtlpDecodeError(f"body has more than {MAX_GZIP_MEMBERS} gzip members")
                    self._decoder = zlib.decompressobj(self._wbits)
                # up to a chunk, to one byte past the cap, to one byte past the budget of this call
                step = DECOMPRESS_CHUNK
                if self.limit is not None:
                    step = min(step, self.limit - self._size + 1)
                if budget is not None:
                    step = min(step, budget - produced + 1)
                chunk = self._decoder.decompress(self._pending, max(step, 1))
                self._pending = self._decoder.unconsumed_tail
                self._size += len(chunk)
                produced += len(chunk)
                if self.limit is not None and self._size > self.limit:
                    raise self._too_large()
                self._out.append(chunk)
                if self._decoder.eof:
                    rest = self._decoder.unused_data
                    self._decoder = None
                    if self.encoding == "gzip" and rest.strip(b"\x00"):
                        self._pending = rest  # another gzip member
                    else:
                        self.done = True
                elif not chunk and not self._pending:
                    raise OtlpDecodeError(f"body is not valid {self.encoding}: it ends too soon")
        except zlib.error as exc:  # zlib's words ("Error -3 while decompressing") name nothing for a client
            raise OtlpDecodeError(
                f"body is not valid {self.encoding}: the compressed data is corrupt"
            ) from exc
        return self.done

    def result(self) -> bytes:
        """The whole decompressed body (after :meth:`run` said done)."""
        assert self.done
        if len(self._out) == 1:
            return self._out[0]
        return b"".join(self._out)


# -- limits and validation, the same for protobuf (C reader and upb) and JSON ------------------------

MAX_TIME_NS = 7_258_118_400 * 10**9  # 2200-01-01: a time past it (or before 1970) cannot be stored
TRUNCATED_KEY = "pilothouse.truncated_values"  # how many values of these attributes were cut short
DROPPED_KEY = "pilothouse.dropped_attributes"  # how many attributes past the limit were left out
CLAMPED_END_KEY = "pilothouse.clamped_end_ns"  # a span that ended before its start: its original end


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one export may hold (settings ``max_span_attributes``, ``max_attribute_value_bytes``,
    ``max_export_spans``, ``max_export_values``, ``max_attribute_key_bytes``). Past the first two
    and the last a span is kept and marked; past the export limits the whole export is refused (413)."""

    span_attributes: int = 128  # per span, event and resource; more are left out (DROPPED_KEY)
    value_bytes: int = 1 << 20  # UTF-8 bytes of a string (raw bytes of a bytes value); cut past it
    export_spans: int = 20_000
    export_values: int = 500_000  # attribute values, nested ones included, of spans, events, resources
    key_bytes: int = 256  # UTF-8 bytes of an attribute key (nested kvlist keys too); longer: left out


DEFAULT_LIMITS = DecodeLimits()


@dataclass(slots=True)
class SpanCounts:
    """What checking an export found: spans taken and rejected (with the first one's reason), and
    its attribute values (nested ones included)."""

    accepted: int = 0
    rejected: int = 0
    values: int = 0
    reason: str | None = None

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if self.reason is None:
            self.reason = reason

    def enforce(self, limits: DecodeLimits) -> None:
        """Raise :class:`OtlpTooLarge` for an export past the per-export limits."""
        spans = self.accepted + self.rejected
        if spans > limits.export_spans:
            raise OtlpTooLarge(f"Export has {spans} spans; the limit is {limits.export_spans} per request.")
        if self.values > limits.export_values:
            raise OtlpTooLarge(
                f"Export has {self.values} attribute values; the limit is {limits.export_values} per request."
            )


def time_problem(
    span_id: str, start_ns: int, end_ns: int, event_times: Iterator[int] | list[int]
) -> str | None:
    """Why a span's times cannot be stored (outside 1970-2200), or None."""
    for what, value in (("start_time_unix_nano", start_ns), ("end_time_unix_nano", end_ns)):
        if not 0 <= value <= MAX_TIME_NS:
            return f"span {span_id}: {what} {value} is outside 1970-2200"
    for value in event_times:
        if not 0 <= value <= MAX_TIME_NS:
            return f"span {span_id}: event time_unix_nano {value} is outside 1970-2200"
    return None


def truncated(text: str, limit: int) -> str | None:
    """``text`` cut to at most ``limit`` UTF-8 bytes on a character boundary, or None if it fits."""
    if len(text) <= limit // 4:  # a character is at most 4 bytes
        return None
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return None
    cut = limit
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:
        cut -= 1
    return raw[:cut].decode("utf-8", "surrogatepass")


def key_too_long(key: str, limit: int) -> bool:
    """Whether ``key`` has more than ``limit`` UTF-8 bytes (its attribute is then left out)."""
    return len(key) > limit // 4 and len(key.encode("utf-8", "surrogatepass")) > limit


def clamped_end(start_ns: int, end_ns: int, attributes: dict[str, Any]) -> int:
    """The end of a span that may end before it starts: moved to its start, and the original end
    kept in ``attributes`` (CLAMPED_END_KEY), as the C reader does."""
    if end_ns >= start_ns:
        return end_ns
    attributes[CLAMPED_END_KEY] = end_ns
    return start_ns


def mark(out: dict[str, Any], cut: int, dropped: int) -> dict[str, Any]:
    """Add the markers of values cut short and attributes left out (the C reader adds the same)."""
    if cut:
        out[TRUNCATED_KEY] = cut
    if dropped:
        out[DROPPED_KEY] = dropped
    return out


def parse_protobuf(body: bytes) -> tuple[ExportTraceServiceRequest, SpanCounts]:
    """Parse and check a protobuf ``ExportTraceServiceRequest``; returns it with its counts (spans
    with times that cannot be stored are rejected, one by one).

    Cheap (the attributes are not read yet), so the collector can refuse a bad body before accepting
    it and leave the rest of the decoding to the batch writer (:func:`iter_protobuf`)."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:  # upb's words name its own internals, not a field a client knows
        raise OtlpDecodeError(
            "body is not an OTLP ExportTraceServiceRequest protobuf (the wire data does not parse)"
        ) from exc
    counts = SpanCounts()
    for resource_spans in request.resource_spans:
        counts.values += count_values(resource_spans.resource.attributes)
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
                # each event and link counts as a value too: 5 million empty events were 107 KB gzipped
                counts.values += count_values(span.attributes) + len(span.events) + len(span.links)
                for e in span.events:
                    counts.values += count_values(e.attributes)
                problem = _span_time_problem(span)
                if problem is None:
                    counts.accepted += 1
                else:
                    counts.reject(problem)
    return request, counts


def _span_time_problem(span: Any) -> str | None:
    return time_problem(
        span.span_id.hex(),
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        [e.time_unix_nano for e in span.events],
    )


def count_values(items: Any) -> int:
    n = 0
    for kv in items:
        if kv.HasField("value"):
            n += value_count(kv.value)
    return n


def value_count(value: AnyValue) -> int:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return 1 + sum(value_count(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return 1 + count_values(value.kvlist_value.values)
    return 1


@dataclass(slots=True)
class CheckedExport:
    """A protobuf export checked whole (:func:`check_protobuf`): its span count (spans accepted),
    what was rejected, and the body (taken by the C reader) or the parsed request (upb) that
    :func:`iter_checked` reads the spans from."""

    count: int
    body: bytes | None = None
    request: ExportTraceServiceRequest | None = None
    rejected: int = 0
    reason: str | None = None
    limits: DecodeLimits = DEFAULT_LIMITS


def check_protobuf(body: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> CheckedExport:
    """Check a whole protobuf export; raises :class:`OtlpDecodeError` with the reason (and
    :class:`OtlpTooLarge` past the per-export limits). Cheap: the spans are made later, by
    :func:`iter_checked` (off the request path)."""
    if _reader is not None:
        try:
            accepted, rejected, values, reason = _reader.check(body)
        except ValueError:
            pass  # upb decides
        else:
            SpanCounts(accepted, rejected, values, reason).enforce(limits)
            return CheckedExport(accepted, body=body, rejected=rejected, reason=reason, limits=limits)
    request, counts = parse_protobuf(body)
    counts.enforce(limits)
    return CheckedExport(
        counts.accepted, request=request, rejected=counts.rejected, reason=counts.reason, limits=limits
    )


def iter_checked(export: CheckedExport) -> Iterator[RawSpan]:
    """The accepted spans of a checked export, within its limits."""
    limits = export.limits
    if export.body is not None:
        if _reader is not None:
            try:
                spans = _reader.decode(
                    export.body,
                    RawSpan,
                    RawEvent,
                    limits.span_attributes,
                    limits.value_bytes,
                    limits.key_bytes,
                )
                return iter(spans)
            except ValueError:  # not expected for a body check() took; upb then reads it
                pass
        return iter_protobuf(parse_protobuf(export.body)[0], limits)
    assert export.request is not None
    return iter_protobuf(export.request, limits)


def decode_protobuf(body: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> Iterator[RawSpan]:
    """The accepted spans of a protobuf ``ExportTraceServiceRequest``."""
    return iter_checked(check_protobuf(body, limits))


def _limited_value(value: AnyValue, limits: DecodeLimits, marks: list[int]) -> Any:
    """A value within the limits; ``marks``: [values cut, nested keys left out] so far."""
    limit = limits.value_bytes
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        short = truncated(text, limit)
        if short is None:
            return text
        marks[0] += 1
        return short
    if kind == "bytes_value":
        raw = value.bytes_value
        if len(raw) > limit:
            marks[0] += 1
            raw = raw[:limit]
        return base64.b64encode(raw).decode()
    if kind == "array_value":
        return [_limited_value(v, limits, marks) for v in value.array_value.values]
    if kind == "kvlist_value":
        out = {}
        for kv in value.kvlist_value.values:
            if key_too_long(kv.key, limits.key_bytes):
                marks[1] += 1
                continue
            out[kv.key] = _limited_value(kv.value, limits, marks)
        return out
    return any_value(value)


def limited_value(value: AnyValue, limits: DecodeLimits) -> Any:
    """The Python value of ``value`` with its strings and bytes cut to ``limits.value_bytes`` and
    its nested keys past ``limits.key_bytes`` left out, at any depth (a log record's body)."""
    return _limited_value(value, limits, [0, 0])


def limited_attributes(items: Any, limits: DecodeLimits) -> dict[str, Any]:
    """Attributes within the limits (per span, event, resource or log record), marked where values
    were cut or attributes left out."""
    # Most values are short, non-empty strings: read those without asking which oneof is set.
    out: dict[str, Any] = {}
    cap, limit, key_limit = limits.span_attributes, limits.value_bytes, limits.key_bytes
    marks = [0, 0]  # values cut, keys left out
    for kv in items:
        key = kv.key
        if key_too_long(key, key_limit) or (len(out) >= cap and key not in out):
            marks[1] += 1
            continue
        value = kv.value
        text = value.string_value
        if text and len(text) <= limit // 4:
            out[key] = text
        else:
            out[key] = _limited_value(value, limits, marks)
    return mark(out, marks[0], marks[1])


def iter_protobuf(
    request: ExportTraceServiceRequest, limits: DecodeLimits = DEFAULT_LIMITS
) -> Iterator[RawSpan]:
    """Spans of a parsed (and checked, see :func:`parse_protobuf`) export request, leaving out those
    it rejected."""
    for resource_spans in request.resource_spans:
        resource = limited_attributes(resource_spans.resource.attributes, limits)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                if _span_time_problem(span) is not None:
                    continue
                parent = span.parent_span_id
                status = span.status
                events = span.events
                attributes = limited_attributes(span.attributes, limits)
                start = span.start_time_unix_nano
                yield RawSpan(
                    span.trace_id.hex(),
                    span.span_id.hex(),
                    parent.hex() if parent else None,
                    span.name,
                    start,
                    clamped_end(start, span.end_time_unix_nano, attributes),
                    status.code,
                    status.message,
                    attributes,
                    resource,
                    scope,
                    [
                        RawEvent(e.name, e.time_unix_nano, limited_attributes(e.attributes, limits))
                        for e in events
                    ]
                    if events
                    else [],
                )


def export_response(rejected: int, message: str, *, json: bool) -> bytes:
    """An ``ExportTraceServiceResponse``: empty, or ``partial_success`` with the spans rejected."""
    if json:
        if not rejected:
            return b"{}"
        return orjson.dumps({"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}})
    if not rejected:
        return b""
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = rejected
    response.partial_success.error_message = message
    return response.SerializeToString()


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
