"""Each accelerator of pilothouse._speedups against its pure-Python reference, on the same inputs.

Whatever an accelerator takes it must give exactly as its reference does; and through the seam, with
the accelerator on or off, every input gives the same result or the same error. Where an accelerator
was not built its tests skip, except in CI (CI=true), where they fail: CI must test the C."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from pilothouse import _speedups
from pilothouse.config import ConfigError, speedups_disabled
from pilothouse.tracing import conventions, otlp, otlp_json
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
from tests.conftest import IN_CI

SPEEDUPS = Path(_speedups.__file__).parent
PAYLOADS = sorted((Path(__file__).parents[1] / "corpus" / "payloads").glob("*/*.pb"))
# C source (extension) -> the seam's name for it. A new accelerator adds a line here, and tests.
ACCELERATORS = {
    "_otlp_reader": "otlp_reader",
    "_attributes": "sort_attributes",
    "_search_words": "search_vector",  # tests/unit/test_speedups_search.py
}


def _built(extension: str) -> Any:
    """The seam's accelerator made from ``extension``; skips the test where it is not in use, but
    fails it in CI where it was not built."""
    accelerator = getattr(_speedups, ACCELERATORS[extension])
    if accelerator is None:
        why = _speedups.unavailable.get(extension, "not loaded")
        if IN_CI and "PILOTHOUSE_NO_SPEEDUPS" not in why:  # turned off on purpose: a run of the references
            pytest.fail(f"{extension} was not built ({why}): make install compiles {extension}.c")
        pytest.skip(f"{extension} is not in use: {why}")
    return accelerator


@pytest.fixture
def reader() -> _speedups.OtlpReader:
    built: _speedups.OtlpReader = _built("_otlp_reader")
    return built


@pytest.fixture
def sorter() -> _speedups.AttributeSorter:
    built: _speedups.AttributeSorter = _built("_attributes")
    return built


# -- the seam ---------------------------------------------------------------------------------------


def test_the_seam_exports() -> None:
    assert sorted(_speedups.__all__) == [
        "AttributeSorter",
        "OtlpReader",
        "SearchVector",
        "otlp_reader",
        "search_vector",
        "sort_attributes",
        "unavailable",
    ]


def test_every_c_source_is_an_accelerator_of_the_seam() -> None:
    assert sorted(p.stem for p in SPEEDUPS.glob("*.c")) == sorted(ACCELERATORS)


@pytest.mark.parametrize("extension", sorted(ACCELERATORS))
def test_each_accelerator_is_built(extension: str) -> None:
    assert _built(extension) is not None


def test_their_users_take_them_from_the_seam() -> None:
    assert otlp._reader is _speedups.otlp_reader
    assert conventions._sort_native is _speedups.sort_attributes


@pytest.mark.slow  # a child interpreter: the switch is read at import
def test_the_environment_switch_turns_every_accelerator_off() -> None:
    """PILOTHOUSE_NO_SPEEDUPS=1: the references run (in a child process: the choice is made at import)."""
    payload = next(p for p in PAYLOADS if p.parent.name == "openinference" and p.name == "chat.pb")
    child = f"""
from pilothouse import _speedups
from pilothouse.config import ConfigError, speedups_disabled
from pilothouse.tracing import conventions, otlp
assert _speedups.otlp_reader is None and _speedups.sort_attributes is None, _speedups.__dict__
assert _speedups.search_vector is None
assert otlp._reader is None and conventions._sort_native is None
assert sorted(_speedups.unavailable) == {sorted(ACCELERATORS)!r}
spans = list(otlp.decode_protobuf(open({str(payload)!r}, "rb").read()))
print(len(spans), len([conventions.normalise_span(s, "p") for s in spans]))
"""
    env = {**os.environ, "PILOTHOUSE_NO_SPEEDUPS": "1"}
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    expected = len(list(iter_protobuf(parse_protobuf(payload.read_bytes())[0])))
    assert out.stdout.split() == [str(expected)] * 2


def test_the_switch_is_read_by_the_config_package(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, disabled in (("1", True), ("0", False), ("true", True), ("", False)):
        monkeypatch.setenv("PILOTHOUSE_NO_SPEEDUPS", value)
        assert speedups_disabled() is disabled, value
    monkeypatch.delenv("PILOTHOUSE_NO_SPEEDUPS")
    assert speedups_disabled() is False
    monkeypatch.setenv("PILOTHOUSE_NO_SPEEDUPS", "maybe")
    with pytest.raises(ConfigError, match="PILOTHOUSE_NO_SPEEDUPS: expected 1 or 0"):
        speedups_disabled()


# -- the OTLP reader against upb --------------------------------------------------------------------


def upb(body: bytes) -> list[RawSpan] | None:
    """The reference: upb parses, Python reads its message objects; None where it refuses."""
    try:
        return list(iter_protobuf(parse_protobuf(body)[0]))
    except OtlpDecodeError:
        return None


def c_reader(
    reader: _speedups.OtlpReader, body: bytes, limits: otlp.DecodeLimits = otlp.DEFAULT_LIMITS
) -> list[RawSpan] | None:
    """The C reader's spans, its counts checked against upb's; None where it refuses."""
    try:
        accepted, rejected, values, reason = reader.check(body)
    except ValueError:
        return None
    spans = reader.decode(
        body, RawSpan, RawEvent, limits.span_attributes, limits.value_bytes, limits.key_bytes
    )
    assert len(spans) == accepted
    counts = parse_protobuf(body)[1]
    expected = (counts.accepted, counts.rejected, counts.values, counts.reason)
    assert (accepted, rejected, values, reason) == expected
    return spans


def same(a: list[RawSpan], b: list[RawSpan]) -> bool:
    # repr: the same values, types, dict order, and NaN compares equal to itself
    return repr(a) == repr(b) and [type(s) for s in a] == [type(s) for s in b]


def through_the_seam(body: bytes, reader: _speedups.OtlpReader | None, monkeypatch: Any) -> object:
    """What the collector makes of ``body`` with ``reader`` (None: upb alone): the spans' repr, or
    the error's class and words."""
    monkeypatch.setattr(otlp, "_reader", reader)
    try:
        return repr(list(iter_checked(check_protobuf(body))))
    except Exception as exc:
        return type(exc), str(exc)


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


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    out = bytearray()
    for n in (number << 3 | 2, len(payload)):
        while n > 0x7F:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
    return bytes(out) + payload


def in_export(raw_span: bytes) -> bytes:
    """A serialised span as the one span of an export, written by hand (protobuf's own classes
    refuse to build messages nested as deep as some of these)."""
    return field(1, field(2, field(2, raw_span)))


def nested(depth: int) -> bytes:
    """A span with one attribute whose value is ``depth`` arrays, one inside the other."""
    value = field(1, b"bottom")
    for _ in range(depth):
        value = field(5, field(1, value))  # AnyValue.array_value = ArrayValue(values=[value])
    return in_export(span(1).SerializeToString() + field(9, field(1, b"deep") + field(2, value)))


def odd_bodies() -> Iterator[tuple[str, bytes]]:
    """Edge cases: empty, garbled and truncated bodies, extreme values, sizes and nesting."""
    yield "empty", b""
    yield "empty resource", b"\x0a\x00"
    yield "garbled", b"\xff" * 12
    yield "truncated length", b"\x0a\x05\x12"
    yield "random bytes", random.Random(3).randbytes(4096)
    extremes = [
        kv("int64 max", AnyValue(int_value=2**63 - 1)),
        kv("int64 min", AnyValue(int_value=-(2**63))),
        *(kv(f"double {x!r}", AnyValue(double_value=x)) for x in (math.inf, -math.inf, -0.0, 1e308, 5e-324)),
        kv("long text", AnyValue(string_value="ü" * 200_000)),
        kv("", AnyValue(string_value="the empty key")),
    ]
    yield (
        "extreme values",
        body(
            span(1, start_time_unix_nano=2**64 - 1, end_time_unix_nano=0, attributes=extremes),
            span(2, status=Status(code=-1)),  # type: ignore[arg-type]  # an open enum: kept as -1
            Span(trace_id=bytes(16), span_id=bytes(8)),  # all-zero ids, no name
        ),
    )
    many = [kv(f"k{i}", AnyValue(int_value=i)) for i in range(5000)]
    yield "many attributes", body(span(1, attributes=many))
    yield "many spans", body(*(span(i % 250 + 1, start_time_unix_nano=i) for i in range(3000)))
    for depth in (31, 32, 33, 45, 60):  # the C reader stops at 32, upb at 100 messages
        yield f"nested {depth}", nested(depth)
    # field 1000 as varint, fixed64, length-delimited and fixed32, then the highest field number
    unknown = b"\xc0\x3e\x01" + b"\xc1\x3e" + bytes(8) + b"\xc2\x3e\x02ab" + b"\xc5\x3e" + bytes(4)
    unknown += b"\xf8\xff\xff\xff\x0f\x01"
    yield "unknown fields", in_export(span(1).SerializeToString() + unknown)
    for path in PAYLOADS[:6]:  # cut anywhere: a truncated export
        data = path.read_bytes()
        for cut in random.Random(path.name).sample(range(1, len(data)), 40):
            yield f"{path.parent.name}/{path.name} cut at {cut}", data[:cut]


def test_captured_payloads_read_the_same(reader: _speedups.OtlpReader) -> None:
    assert len(PAYLOADS) >= 20
    for path in PAYLOADS:
        data = path.read_bytes()
        expected = upb(data)
        if expected is None:  # a logs export, not traces
            continue
        got = c_reader(reader, data)
        assert got is not None, f"{path.name}: refused"
        assert same(got, expected), path.name


def test_odd_bodies_read_the_same_through_the_seam(reader: _speedups.OtlpReader, monkeypatch: Any) -> None:
    """Empty, truncated, garbled and extreme bodies: the same spans, or the same error (an
    OtlpDecodeError in upb's words), with the C reader and without it."""
    refused = set()
    for name, data in odd_bodies():
        with_c = through_the_seam(data, reader, monkeypatch)
        assert with_c == through_the_seam(data, None, monkeypatch), name
        if isinstance(with_c, tuple):
            assert with_c[0] is OtlpDecodeError, (name, with_c)
            refused.add(name)
        got = c_reader(reader, data)
        if got is not None:  # what the reader takes it reads as upb does
            assert same(got, upb(data) or []), name
    assert {"garbled", "truncated length", "random bytes", "nested 60"} <= refused
    assert not {"empty", "extreme values", "many spans", "nested 45", "unknown fields"} & refused
    assert sum(" cut at " in name for name in refused) > 200
    assert c_reader(reader, nested(32)) is not None and c_reader(reader, nested(33)) is None  # upb's


def test_every_value_kind_and_span_field(reader: _speedups.OtlpReader) -> None:
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
        start_time_unix_nano=2**62,
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
    got = c_reader(reader, data)
    assert got is not None and same(got, expected)
    assert got[0].resource is got[2].resource  # one dict per resource, as upb's reader gives


def test_spans_ending_before_they_start_and_long_keys_read_the_same_everywhere(
    reader: _speedups.OtlpReader, monkeypatch: Any
) -> None:
    """A span that ends before it starts ends at its start, marked with its original end; an
    attribute whose key is past 256 UTF-8 bytes is left out and counted (nested kvlist keys too):
    the C reader, upb, OTLP/JSON decoded here and OTLP/JSON through the worker's transcoding agree."""
    long_key, fits = "k" * 257, "é" * 128  # 257 bytes; 256 bytes: kept
    inner = KeyValueList(values=[kv(long_key, AnyValue(int_value=1)), kv("ok", AnyValue(int_value=2))])
    attrs = [
        kv(long_key, AnyValue(string_value="left out")),
        kv(fits, AnyValue(string_value="kept")),
        kv("nested", AnyValue(kvlist_value=inner)),
    ]
    event = Span.Event(name="e", time_unix_nano=1500, attributes=[kv(long_key, AnyValue(int_value=3))])
    backwards = span(1, start_time_unix_nano=2000, end_time_unix_nano=1000, attributes=attrs, events=[event])
    data = body(backwards, span(2, start_time_unix_nano=5, end_time_unix_nano=9), resource=attrs[:1])
    expected = upb(data)
    got = c_reader(reader, data)
    assert expected is not None and got is not None and same(got, expected)
    first, second = got
    assert (first.start_ns, first.end_ns) == (2000, 2000)
    assert first.attributes[otlp.CLAMPED_END_KEY] == 1000
    assert first.attributes[otlp.DROPPED_KEY] == 2  # the long key, and the long key nested in "nested"
    assert first.attributes[fits] == "kept" and first.attributes["nested"] == {"ok": 2}
    assert first.events[0].attributes == {otlp.DROPPED_KEY: 1}
    assert first.resource == {otlp.DROPPED_KEY: 1}
    assert (second.end_ns, otlp.CLAMPED_END_KEY in second.attributes) == (9, False)
    # OTLP/JSON: decoded in this process, and transcoded to protobuf (the worker) then read by C
    request = ExportTraceServiceRequest.FromString(data)
    as_json = json_format.MessageToJson(request).encode()
    assert same(otlp_json.decode_json(as_json).spans, expected)
    transcoded, rejected, _ = otlp_json.json_to_protobuf(as_json, otlp.DEFAULT_LIMITS)
    assert rejected == 0 and same(c_reader(reader, transcoded) or [], expected)
    # through the seam, with the limit of the settings
    monkeypatch.setattr(otlp, "_reader", reader)
    roomy = otlp.DecodeLimits(key_bytes=300)
    [kept, _] = iter_checked(check_protobuf(data, roomy))
    assert kept.attributes[long_key] == "left out" and otlp.DROPPED_KEY not in kept.attributes


def test_field_order_does_not_matter(reader: _speedups.OtlpReader) -> None:
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
    got = c_reader(reader, data)
    assert got is not None and same(got, expected)


def test_what_it_refuses_goes_to_upb(reader: _speedups.OtlpReader) -> None:
    # A singular message given twice is legal protobuf (merged): the reader leaves it to upb.
    status_again = Span(status=Status(code=Status.STATUS_CODE_OK)).SerializeToString()
    raw_span = span(1, status=Status(message="a")).SerializeToString() + status_again
    ss = b"\x12" + bytes([len(raw_span)]) + raw_span
    rs = b"\x12" + bytes([len(ss)]) + ss
    data = b"\x0a" + bytes([len(rs)]) + rs
    with pytest.raises(ValueError):
        reader.check(data)
    checked = check_protobuf(data)
    assert checked.body is None and checked.count == 1
    [merged] = iter_checked(checked)
    assert (merged.status_code, merged.status_message) == (1, "a")

    # Invalid UTF-8, even in a field nobody reads, and ids of the wrong length: refused by both.
    bad_utf8 = body(span(1, trace_state="ok")).replace(b"ok", b"\xff\xfe")
    short_id = body(Span(trace_id=b"\x01" * 15, span_id=b"\x01" * 8))
    for data in (bad_utf8, short_id, b"\x0a\x05\x12", b"\xff" * 12):
        with pytest.raises(ValueError):
            reader.check(data)
        with pytest.raises(OtlpDecodeError):
            list(decode_protobuf(data))


def test_mutated_bodies_never_read_differently(reader: _speedups.OtlpReader) -> None:
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
        expected, got = upb(bytes(data)), c_reader(reader, bytes(data))
        if got is None:
            refused += 1
            continue
        assert expected is not None, "the C reader took a body upb refuses"
        assert same(got, expected)
        taken += 1
    assert taken > 20 and refused > 20  # both sides exercised


def test_limits_and_rejections_read_the_same(reader: _speedups.OtlpReader) -> None:
    """Attributes past the limit left out, long values cut on a character boundary (text) or a byte
    (bytes), spans with times outside 1970-2200 rejected with the same reason: C and upb alike."""
    limits = otlp.DecodeLimits(span_attributes=3, value_bytes=5)
    nested = AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="ééééé"), AnyValue(int_value=1)]))
    attrs = [
        kv("a", AnyValue(string_value="abcdefgh")),
        kv("b", AnyValue(string_value="aé€😀")),  # 1 + 2 + 3 + 4 bytes: cut to "aé"
        kv("c", nested),
        kv("a", AnyValue(string_value="again")),  # a key already kept: replaced, not left out
        kv("d", AnyValue(bytes_value=b"\x00" * 9)),
        kv("e", AnyValue(int_value=5)),
    ]
    event = Span.Event(name="e", time_unix_nano=2**63, attributes=attrs)
    data = body(
        span(1, attributes=attrs, start_time_unix_nano=1, end_time_unix_nano=2),
        span(2, start_time_unix_nano=2**64 - 1),
        span(3, events=[event]),
        span(4, end_time_unix_nano=otlp.MAX_TIME_NS + 1),
        span(5, start_time_unix_nano=otlp.MAX_TIME_NS),
        resource=attrs,
    )
    expected = list(iter_protobuf(parse_protobuf(data)[0], limits))
    got = c_reader(reader, data, limits)
    assert got is not None and same(got, expected)
    assert [s.name for s in got] == ["s1", "s5"]
    first = got[0].attributes
    assert first == {
        "a": "again",
        "b": "aé",
        "c": ["éé", 1],
        otlp.TRUNCATED_KEY: 3,
        otlp.DROPPED_KEY: 2,
    }
    assert got[0].resource == first
    counts = parse_protobuf(data)[1]
    assert (counts.accepted, counts.rejected) == (2, 3)
    assert (
        counts.reason
        == "span 0202020202020202: start_time_unix_nano 18446744073709551615 is outside 1970-2200"
    )
    assert counts.values == 3 * 8 + 1  # span 1's, span 3's event's and the resource's attributes (8 values
    # each) and span 3's event itself
    with pytest.raises(otlp.OtlpTooLarge):
        check_protobuf(data, otlp.DecodeLimits(export_values=15))
    with pytest.raises(otlp.OtlpTooLarge):
        check_protobuf(data, otlp.DecodeLimits(export_spans=4))


def test_short_strings_are_shared_and_read_right(reader: _speedups.OtlpReader) -> None:
    """Short ASCII strings come from a cache of shared copies; longer, non-ASCII and colliding ones
    must still read exactly as upb reads them."""
    names = ["a", "user", "x" * 48, "x" * 49, "héllo", "a\x00b", ""]
    many = body(
        span(1, attributes=[kv(n, AnyValue(string_value=n)) for n in [*names, *map(str, range(3000))]])
    )
    assert same(c_reader(reader, many) or [], upb(many) or [])  # 3,000 names in 1,024 slots: collisions
    data = body(span(2, attributes=[kv(n, AnyValue(string_value=n)) for n in names]))
    first, again = c_reader(reader, data), c_reader(reader, data)
    assert first is not None and again is not None
    assert same(first, upb(data) or []) and same(again, first)
    shared = [k for k in first[0].attributes if any(k is j for j in again[0].attributes)]
    assert "user" in shared and "x" * 48 in shared and "x" * 49 not in shared and "héllo" not in shared


def test_span_objects_of_other_classes_are_made_safely(reader: _speedups.OtlpReader) -> None:
    """The reader fills RawSpan's slots directly, from offsets it finds once per class: a class whose
    fields cannot be found leaves that cache as it was, and slots borrowed from another class are
    refused as setattr refuses them."""
    data = body(span(1))
    names = [f.name for f in dataclasses.fields(RawSpan)]
    assert c_reader(reader, data) is not None  # the offsets of RawSpan are cached
    far_out = type("FarOut", (), {"__slots__": (*(f"pad{i}" for i in range(200)), "trace_id")})
    with pytest.raises(AttributeError):
        reader.decode(data, far_out, RawEvent, 128, 1024)  # no span_id: refused, RawSpan's offsets kept
    assert repr(reader.decode(data, RawSpan, RawEvent, 128, 1024)) == repr(upb(data))
    big = type("Big", (), {"__slots__": (*(f"pad{i}" for i in range(40)), *names)})
    tiny = type("Tiny", (), {"__slots__": (), **{n: big.__dict__[n] for n in names}})
    with pytest.raises(TypeError, match="doesn't apply"):
        reader.decode(data, tiny, RawEvent, 128, 1024)


# -- sort_attributes against conventions._sort_attributes ------------------------------------------


def corpus_spans() -> list[RawSpan]:
    spans = [s for path in PAYLOADS for s in upb(path.read_bytes()) or []]
    assert len(spans) >= 20
    return spans


def sorts_the_same(sorter: _speedups.AttributeSorter, attrs: dict[str, Any]) -> None:
    expected = conventions._sort_attributes(dict(attrs))
    for routes in ({}, conventions._ROUTES):  # routes made on the way, then remembered ones
        got = sorter(dict(attrs), routes, conventions._route)
        assert repr(got) == repr(expected), attrs


def test_sort_attributes_matches_its_reference(sorter: _speedups.AttributeSorter) -> None:
    for s in corpus_spans():
        sorts_the_same(sorter, s.attributes)
    # two conventions naming one slot, in both orders; values that fill no slot; every route kind
    for attrs in (
        {"llm.model_name": "a", "gen_ai.response.model": "b", "gen_ai.request.model": ""},
        {"gen_ai.response.model": "b", "llm.model_name": "a", "gen_ai.request.model": None},
        {"gen_ai.request.model": "", "llm.request.model": "m", "gen_ai.system": 0, "llm.system": False},
        {"llm.token_count.total": 5, "llm.input_messages.0.message.role": "user", "x": b"", "y": [1]},
        {"gen_ai.prompt.0.content": "hi", "gen_ai.prompt.0.role": "user", "": "empty key"},
        {},
    ):
        sorts_the_same(sorter, attrs)


def test_sort_attributes_matches_its_reference_on_random_spans(sorter: _speedups.AttributeSorter) -> None:
    rng = random.Random(5)
    names = [*conventions._ALIASES, *(p + "0.role" for p in conventions._GROUPS), *conventions._GROUPS]
    names += ["", "x", "user.name", "llm", "gen_ai.prompt", "ünï.code"]
    values: list[Any] = [None, "", "text", 0, 1, -1, 2**70, False, True, 0.0, math.nan, [1], {"a": 1}, b""]
    for _ in range(2000):
        attrs = {rng.choice(names): rng.choice(values) for _ in range(rng.randint(0, 30))}
        sorts_the_same(sorter, attrs)


def test_sort_attributes_errors(sorter: _speedups.AttributeSorter) -> None:
    def broken(key: str) -> tuple[int, str, int]:
        raise RuntimeError(key)

    with pytest.raises(RuntimeError, match="unknown"):
        sorter({"unknown": 1}, {}, broken)
    with pytest.raises(TypeError):
        sorter({"k": 1}, {"k": (0, "slot")}, broken)  # type: ignore[dict-item]  # not a route


def test_the_normaliser_gives_the_same_records_either_way(
    sorter: _speedups.AttributeSorter, monkeypatch: Any
) -> None:
    spans = corpus_spans()

    def records(sort: Callable[..., Any] | None) -> str:
        monkeypatch.setattr(conventions, "_sort_native", sort)
        return repr([conventions.normalise_span(s, "p") for s in spans])

    assert records(sorter) == records(None)
