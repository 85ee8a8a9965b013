"""The C reader of OTLP/protobuf exports against upb: whatever it takes, it must read exactly as upb
does (the collector hands everything else to upb)."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from pilothouse.tracing import otlp
from pilothouse.tracing.otlp import (
    OtlpDecodeError,
    RawEvent,
    RawSpan,
    check_protobuf,
    decode_protobuf,
    iter_checked,
    iter_protobuf,
    parse_protobuf,
)

native = otlp._otlp_native
PAYLOADS = sorted((Path(__file__).parents[1] / "corpus" / "payloads").glob("*/*.pb"))

pytestmark = pytest.mark.skipif(
    native is None and os.environ.get("CI") != "true",
    reason="the C reader is not built here (no C compiler at install)",
)


def test_the_reader_is_built() -> None:
    assert native is not None, "make install must compile src/pilothouse/tracing/_otlp_native.c"


def upb(body: bytes) -> list[RawSpan] | None:
    try:
        return list(iter_protobuf(parse_protobuf(body)[0]))
    except OtlpDecodeError:
        return None


def c_reader(body: bytes) -> list[RawSpan] | None:
    try:
        count = native.count(body)
    except ValueError:
        return None
    spans: list[RawSpan] = native.decode(body, RawSpan, RawEvent)
    assert len(spans) == count
    return spans


def same(a: list[RawSpan], b: list[RawSpan]) -> bool:
    # repr: the same values, types, dict order, and NaN compares equal to itself
    return repr(a) == repr(b) and [type(s) for s in a] == [type(s) for s in b]


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def span(n: int, **fields: object) -> Span:
    return Span(trace_id=bytes([n]) * 16, span_id=bytes([n]) * 8, name=f"s{n}", **fields)  # type: ignore[arg-type]


def body(*spans: Span, resource: list[KeyValue] | None = None, scope: str = "lib") -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(resource or [])
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    ss.spans.extend(spans)
    return request.SerializeToString()


def test_captured_payloads_read_the_same() -> None:
    assert len(PAYLOADS) >= 20
    for path in PAYLOADS:
        data = path.read_bytes()
        expected = upb(data)
        if expected is None:  # a logs export, not traces
            continue
        got = c_reader(data)
        assert got is not None, f"{path.name}: refused"
        assert same(got, expected), path.name


def test_every_value_kind_and_span_field() -> None:
    nested = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                kv("a", AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue()]))),
                kv("b", AnyValue(bool_value=False)),
            ]
        )
    )
    attrs = [
        kv("text", AnyValue(string_value="héllo ✓ 😀")),
        kv("empty", AnyValue(string_value="")),
        kv("yes", AnyValue(bool_value=True)),
        kv("big", AnyValue(int_value=-(2**63))),
        kv("pi", AnyValue(double_value=3.14159)),
        kv("nan", AnyValue(double_value=float("nan"))),
        kv("raw", AnyValue(bytes_value=b"\x00\xffbytes")),
        kv("list", AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="x"), nested]))),
        kv("nothing", AnyValue()),
        kv("index", AnyValue(string_value_strindex=3)),
        kv("text", AnyValue(string_value="duplicate key: the last wins")),
        KeyValue(key="no value"),
    ]
    first = span(
        1,
        parent_span_id=b"\x07" * 8,
        trace_state="k=v",
        start_time_unix_nano=2**64 - 1,
        end_time_unix_nano=5,
        attributes=attrs,
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom ✗"),
        events=[Span.Event(name="token", time_unix_nano=7, attributes=[kv("n", AnyValue(int_value=2))])],
        links=[Span.Link(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, trace_state="x")],
    )
    unknown_code = span(2, status=Status(code=7))  # type: ignore[arg-type]  # open enum: kept as 7
    data = body(first, unknown_code, span(3), resource=[kv("service.name", AnyValue(string_value="svc"))])
    expected = upb(data)
    assert expected is not None and expected[0].events and expected[1].status_code == 7
    got = c_reader(data)
    assert got is not None and same(got, expected)
    assert got[0].resource is got[2].resource  # one dict per resource, as upb's reader gives


def test_field_order_does_not_matter() -> None:
    # A producer may write a message's fields in any order: scope_spans before resource here.
    rs = ResourceSpans()
    rs.resource.attributes.append(kv("service.name", AnyValue(string_value="svc")))
    ss = ScopeSpans()
    ss.scope.name = "lib"
    ss.spans.append(span(1))
    scope_first = b"\x0a" + bytes([len(ss.scope.SerializeToString())]) + ss.scope.SerializeToString()
    ss_body = ss.SerializeToString()
    ss_reordered = ss_body.replace(scope_first, b"") + scope_first  # spans, then the scope
    resource = b"\x0a" + bytes([len(rs.resource.SerializeToString())]) + rs.resource.SerializeToString()
    rs_body = b"\x12" + bytes([len(ss_reordered)]) + ss_reordered + resource
    data = b"\x0a" + bytes([len(rs_body)]) + rs_body
    expected = upb(data)
    assert expected is not None and expected[0].resource == {"service.name": "svc"}
    assert expected[0].scope == "lib"
    got = c_reader(data)
    assert got is not None and same(got, expected)


def test_what_it_refuses_goes_to_upb() -> None:
    # A singular message given twice is legal protobuf (merged): the reader leaves it to upb.
    status_again = Span(status=Status(code=Status.STATUS_CODE_OK)).SerializeToString()
    raw_span = span(1, status=Status(message="a")).SerializeToString() + status_again
    ss = b"\x12" + bytes([len(raw_span)]) + raw_span
    rs = b"\x12" + bytes([len(ss)]) + ss
    data = b"\x0a" + bytes([len(rs)]) + rs
    with pytest.raises(ValueError):
        native.count(data)
    checked = check_protobuf(data)
    assert checked.body is None and checked.count == 1
    [merged] = iter_checked(checked)
    assert (merged.status_code, merged.status_message) == (1, "a")

    # Invalid UTF-8, even in a field nobody reads, and ids of the wrong length: refused by both.
    bad_utf8 = body(span(1, trace_state="ok")).replace(b"ok", b"\xff\xfe")
    short_id = body(Span(trace_id=b"\x01" * 15, span_id=b"\x01" * 8))
    for data in (bad_utf8, short_id, b"\x0a\x05\x12", b"\xff" * 12):
        with pytest.raises(ValueError):
            native.count(data)
        with pytest.raises(OtlpDecodeError):
            list(decode_protobuf(data))


def test_mutated_bodies_never_read_differently() -> None:
    rng = random.Random(11)
    seeds = [p.read_bytes() for p in PAYLOADS[:12]]
    seeds = [s for s in seeds if upb(s) is not None]
    taken = refused = 0
    for _ in range(1500):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            op = rng.random()
            if op < 0.5:
                data[at] = rng.randrange(256)
            elif op < 0.75:
                del data[at : at + rng.randint(1, 6)]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 4))
        expected, got = upb(bytes(data)), c_reader(bytes(data))
        if got is None:
            refused += 1
            continue
        assert expected is not None, "the C reader took a body upb refuses"
        assert same(got, expected)
        taken += 1
    assert taken > 20 and refused > 20  # both sides exercised


def test_sort_attributes_matches_the_normalisers_python_loop() -> None:
    from pilothouse.tracing import conventions

    def both(attrs: dict[str, object]) -> None:
        expected = conventions._sort_attributes(dict(attrs))
        for routes in ({}, conventions._ROUTES):  # routes made on the way, then remembered ones
            got = native.sort_attributes(dict(attrs), routes, conventions._route)
            assert repr(got) == repr(expected), attrs

    spans = [s for path in PAYLOADS for s in upb(path.read_bytes()) or []]
    assert len(spans) >= 20
    for s in spans:
        both(s.attributes)
    # two conventions naming one slot, in both orders; values that fill no slot; every route kind
    both({"llm.model_name": "a", "gen_ai.response.model": "b", "gen_ai.request.model": ""})
    both({"gen_ai.response.model": "b", "llm.model_name": "a", "gen_ai.request.model": None})
    both({"gen_ai.request.model": "", "llm.request.model": "m", "gen_ai.system": 0, "llm.system": False})
    both({"llm.token_count.total": 5, "llm.input_messages.0.message.role": "user", "x": b"", "y": [1]})
    both({"gen_ai.prompt.0.content": "hi", "gen_ai.prompt.0.role": "user", "": "empty key"})

    def broken(key: str) -> tuple[int, str, int]:
        raise RuntimeError(key)

    with pytest.raises(RuntimeError, match="unknown"):
        native.sort_attributes({"unknown": 1}, {}, broken)
    with pytest.raises(TypeError):
        native.sort_attributes({"k": 1}, {"k": (0, "slot")}, broken)


def test_short_strings_are_shared_and_read_right() -> None:
    """Short ASCII strings come from a cache of shared copies; longer, non-ASCII and colliding ones
    must still read exactly as upb reads them."""
    names = ["a", "user", "x" * 48, "x" * 49, "héllo", "a\x00b", ""]
    many = body(
        span(1, attributes=[kv(n, AnyValue(string_value=n)) for n in [*names, *map(str, range(3000))]])
    )
    assert same(c_reader(many) or [], upb(many) or [])  # 3,000 names in 1,024 slots: collisions
    data = body(span(2, attributes=[kv(n, AnyValue(string_value=n)) for n in names]))
    first, again = c_reader(data), c_reader(data)
    assert first is not None and again is not None
    assert same(first, upb(data) or []) and same(again, first)
    shared = [k for k in first[0].attributes if any(k is j for j in again[0].attributes)]
    assert "user" in shared and "x" * 48 in shared and "x" * 49 not in shared and "héllo" not in shared


def test_span_objects_of_other_classes_are_made_safely() -> None:
    """The reader fills RawSpan's slots directly, from offsets it finds once per class: a class whose
    fields cannot be found leaves that cache as it was, and slots borrowed from another class are
    refused as setattr refuses them."""
    data = body(span(1))
    names = [f.name for f in dataclasses.fields(RawSpan)]
    assert c_reader(data) is not None  # the offsets of RawSpan are cached
    far_out = type("FarOut", (), {"__slots__": (*(f"pad{i}" for i in range(200)), "trace_id")})
    with pytest.raises(AttributeError):
        native.decode(data, far_out, RawEvent)  # no span_id: refused, RawSpan's offsets kept
    assert repr(native.decode(data, RawSpan, RawEvent)) == repr(upb(data))
    big = type("Big", (), {"__slots__": (*(f"pad{i}" for i in range(40)), *names)})
    tiny = type("Tiny", (), {"__slots__": (), **{n: big.__dict__[n] for n in names}})
    with pytest.raises(TypeError, match="doesn't apply"):
        native.decode(data, tiny, RawEvent)
