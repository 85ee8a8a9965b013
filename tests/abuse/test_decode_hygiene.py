"""Issue 21, the last decode gaps: spans that end before they start, attribute keys of any length,
and 400s that quoted Python's own error text. Over the app's real HTTP surface (TestClient) and a
real SQLite store; the C reader and its Python references agree (tests/unit/test_speedups.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

from tests.server.conftest import Served, serve
from tests.spans import any_value, export_request, otlp_span

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
CLAMPED_END_KEY = "pilothouse.clamped_end_ns"  # tracing.otlp's, written out: the tests run on older code
DROPPED_KEY = "pilothouse.dropped_attributes"
# words of Python's own exceptions, which no answer of ours may quote
PYTHON_WORDS = (
    "invalid literal",
    "int()",
    "float()",
    "object has no attribute",
    "NoneType",
    "Error(",
    "base 10",
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


def _stored(served: Served) -> dict[str, dict[str, Any]]:
    """The stored observations by name."""
    served.drain()
    out = {}
    for t in served.client.get("/api/traces", headers=served.auth).json()["data"]:
        for o in served.client.get(f"/api/traces/{t['id']}", headers=served.auth).json()["observations"]:
            out[o["name"]] = o
    return out


def _json_export(span: dict[str, Any], resource: dict[str, Any] | None = None) -> bytes:
    base = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "s", "startTimeUnixNano": "1700000000000000000"}
    resource_spans: dict[str, Any] = {"scopeSpans": [{"scope": {"name": "lib"}, "spans": [{**base, **span}]}]}
    if resource is not None:
        resource_spans["resource"] = resource
    return json.dumps({"resourceSpans": [resource_spans]}).encode()


@pytest.mark.parametrize("wire", ["protobuf", "json"])
def test_a_span_ending_before_it_starts_is_stored_ending_at_its_start_and_marked(
    served: Served, wire: str
) -> None:
    start = 1_700_000_000_000_000_000
    if wire == "protobuf":
        backwards = otlp_span("backwards", {"k": "v"})
        backwards.start_time_unix_nano, backwards.end_time_unix_nano = start, start - 5_000_000
        body, headers = export_request([backwards]).SerializeToString(), PROTOBUF
    else:
        span = {"name": "backwards", "endTimeUnixNano": str(start - 5_000_000)}
        body, headers = _json_export(span), JSON
    r = served.client.post("/v1/traces", content=body, headers={**headers, **served.auth})
    assert r.status_code == 200, r.text
    stored = _stored(served)["backwards"]
    assert stored["attributes"][CLAMPED_END_KEY] == start - 5_000_000
    assert stored["latency_ms"] == 0  # it ends where it starts: no negative duration anywhere


@pytest.mark.parametrize("wire", ["protobuf", "json"])
def test_attributes_with_keys_past_256_bytes_are_left_out_and_counted(served: Served, wire: str) -> None:
    long_key, fits = "x" * 10_000, "é" * 128  # 256 bytes of UTF-8: kept
    if wire == "protobuf":
        span = otlp_span("keys", {long_key: "v", fits: "kept"})
        inner = [KeyValue(key=long_key, value=any_value(1)), KeyValue(key="ok", value=any_value(2))]
        span.attributes.add(key="nested", value=AnyValue(kvlist_value=KeyValueList(values=inner)))
        body, headers = export_request([span], resource={long_key: "r"}).SerializeToString(), PROTOBUF
    else:
        kvs = [
            {"key": long_key, "value": {"stringValue": "v"}},
            {"key": fits, "value": {"stringValue": "kept"}},
            {
                "key": "nested",
                "value": {
                    "kvlistValue": {
                        "values": [
                            {"key": long_key, "value": {"intValue": "1"}},
                            {"key": "ok", "value": {"intValue": "2"}},
                        ]
                    }
                },
            },
        ]
        resource = {"attributes": [{"key": long_key, "value": {"stringValue": "r"}}]}
        body, headers = _json_export({"name": "keys", "attributes": kvs}, resource), JSON
    r = served.client.post("/v1/traces", content=body, headers={**headers, **served.auth})
    assert r.status_code == 200, r.text
    attrs = _stored(served)["keys"]["attributes"]
    assert long_key not in attrs and not any(len(k) > 256 for k in attrs)
    assert attrs[fits] == "kept" and attrs["nested"] == {"ok": 2}
    assert attrs[DROPPED_KEY] == 2  # the key itself and the one nested in "nested"


def _attribute(value: Any) -> bytes:
    return _json_export({"attributes": [{"key": "k", "value": value}]})


BAD_JSON: list[tuple[str, bytes, str]] = [
    ("intValue as a decimal", _attribute({"intValue": "1.5"}), "intValue"),
    ("intValue of 30 digits", _attribute({"intValue": "9" * 30}), "intValue"),
    ("intValue of 5,000 digits", _attribute({"intValue": "9" * 5000}), "intValue"),
    ("intValue as text", _attribute({"intValue": "twelve"}), "intValue"),
    ("doubleValue as text", _attribute({"doubleValue": "abc"}), "doubleValue"),
    ("arrayValue as a list", _attribute({"arrayValue": [1, 2]}), "arrayValue"),
    ("kvlistValue as text", _attribute({"kvlistValue": "x"}), "kvlistValue"),
    ("start time as a decimal", _json_export({"startTimeUnixNano": "1.5e3x"}), "startTimeUnixNano"),
    ("resource as text", _json_export({}, resource="x"), "resource"),  # type: ignore[arg-type]
    ("resourceSpans item as text", b'{"resourceSpans": ["x"]}', "resourceSpans"),
    ("scopeSpans item as a number", b'{"resourceSpans": [{"scopeSpans": [5]}]}', "scopeSpans"),
    ("scope as a list", b'{"resourceSpans": [{"scopeSpans": [{"scope": []}]}]}', "scope"),
    ("not JSON", b'{"resourceSpans": [', "line 1"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_every_otlp_json_400_is_our_own_sentence_naming_the_field(
    served: Served, case: str, body: bytes, field: str
) -> None:
    r = served.client.post("/v1/traces", content=body, headers={**JSON, **served.auth})
    assert r.status_code == 400, (case, r.text)
    message = r.json()["error"]["message"]
    assert field in message, (case, message)
    assert not any(word in message for word in PYTHON_WORDS), (case, message)
    assert len(message) < 300, (case, message)  # a 5,000-digit number is not echoed back


def test_a_gateway_body_that_is_not_json_gets_a_400_naming_where(served: Served) -> None:
    r = served.client.post(
        "/v1/chat/completions", content=b'{"model": "m",\n "messages": [}', headers=served.auth
    )
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert message.startswith("Request body is not valid JSON (line 2, column"), message


def test_corrupt_gzip_and_protobuf_400s_do_not_quote_their_libraries(served: Served) -> None:
    cases = [
        (b"\x1f\x8b\x08\x00garbage", {**PROTOBUF, "Content-Encoding": "gzip"}, "gzip"),
        (b"\xff\xfe\xfd not protobuf", PROTOBUF, "protobuf"),
    ]
    for body, headers, what in cases:
        r = served.client.post("/v1/traces", content=body, headers={**headers, **served.auth})
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert what in message and "Error -3" not in message and "Error parsing" not in message, message
