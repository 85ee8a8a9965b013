"""What the durable mode writes to the spool, and reads back at start-up: an OTLP export as it was
received (``O``: the project, content type and encoding, then the body), the span records of
gateway calls (``S``: JSON), or the interrupted record of a stream that has started (``I``: JSON, as
``S``), which an ``S`` record of the same span written later supersedes. Amounts of money are whole
pico-dollars, so a replayed cost is the recorded one exactly."""

from __future__ import annotations

import struct
from typing import Any

import orjson

from pilothouse.domain.money import Money
from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)

OTLP = b"O"
SPANS = b"S"
INTERIM = b"I"  # a streamed call's interrupted record, superseded by a later S record of its span
_META = struct.Struct("<I")


class UnreadableRecord(ValueError):
    """A spool record this version cannot read (its CRC checked: a bug or a format change)."""


def otlp_record(project_id: str, content_type: str | None, encoding: str | None, body: bytes) -> bytes:
    """The spool record of an OTLP export body, as received (still compressed)."""
    meta = orjson.dumps({"p": project_id, "t": content_type, "e": encoding})
    return b"".join((OTLP, _META.pack(len(meta)), meta, body))


def read_otlp(payload: bytes) -> tuple[str, str | None, str | None, bytes]:
    """(project id, content type, content encoding, body) of an ``O`` record."""
    (size,) = _META.unpack_from(payload, 1)
    start = 1 + _META.size
    meta = orjson.loads(payload[start : start + size])
    return meta["p"], meta["t"], meta["e"], payload[start + size :]


def span_records(records: list[SpanRecord]) -> bytes:
    """The spool record of gateway span records."""
    return SPANS + orjson.dumps([_encode(r) for r in records], default=str)


def interim_records(records: list[SpanRecord]) -> bytes:
    """The spool record of streamed calls' interrupted records (read back with :func:`read_spans`)."""
    return INTERIM + orjson.dumps([_encode(r) for r in records], default=str)


def read_spans(payload: bytes) -> list[SpanRecord]:
    """The span records of an ``S`` (or ``I``) record."""
    try:
        return [_decode(item) for item in orjson.loads(payload[1:])]
    except (KeyError, TypeError, ValueError) as exc:
        raise UnreadableRecord(f"a span record of the spool cannot be read: {exc}") from exc


def _encode(record: SpanRecord) -> dict[str, Any]:
    o = record.observation
    cost = o.cost
    return {
        "p": record.project_id,
        "o": {
            "trace_id": o.trace_id,
            "id": o.id,
            "name": o.name,
            "start_ns": o.start_ns,
            "end_ns": o.end_ns,
            "kind": o.kind.value,
            "parent_id": o.parent_id,
            "status": o.status.value,
            "status_message": o.status_message,
            "input": o.input,
            "output": o.output,
            "attributes": o.attributes,
            "provider": o.provider,
            "request_model": o.request_model,
            "model": o.model,
            "model_parameters": o.model_parameters,
            "usage": o.usage,
            "ttft_ns": o.ttft_ns,
            "prompt_name": o.prompt_name,
            "prompt_version": o.prompt_version,
        },
        "c": None
        if cost is None
        else {
            "items": {k: v.pico for k, v in cost.items.items()},
            "version": cost.price_version,
            "saved": cost.saved.pico,
        },
        "t": record.trace,
        "m": record.metered,
    }


def _decode(item: dict[str, Any]) -> SpanRecord:
    fields = dict(item["o"])
    fields["kind"] = ObservationKind(fields["kind"])
    fields["status"] = Status(fields["status"])
    fields["usage"] = Usage(**fields["usage"])
    cost = item["c"]
    if cost is not None:
        fields["cost"] = Cost(
            {k: Money(v) for k, v in cost["items"].items()}, cost["version"], Money(cost["saved"])
        )
    trace = dict(item["t"])
    trace["tags"] = tuple(trace["tags"])
    # metered: the gateway billed it (it counts toward budgets); records spooled before the flag was
    # written are all the gateway's own calls
    metered = bool(item.get("m", True))
    return SpanRecord(item["p"], Observation(**fields), TraceAttributes(**trace), metered=metered)
