"""POST /v1/traces: formats, auth, bad input, limits and backpressure."""

from __future__ import annotations

import gc
import gzip
import json
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from tests.server.conftest import Served, serve
from tests.spans import export_request, llm_attributes, otlp_span

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def test_protobuf_export_is_stored_and_queryable(served: Served) -> None:
    span = otlp_span("ChatCompletion", llm_attributes(prompt=20, completion=10))
    r = served.client.post(
        "/v1/traces", content=export_request([span]).SerializeToString(), headers={**PROTOBUF, **served.auth}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-protobuf"
    served.drain()
    data = served.client.get("/api/traces", headers=served.auth).json()["data"]
    assert len(data) == 1
    assert data[0]["id"] == span.trace_id.hex()
    assert data[0]["usage"] == {"input": 20, "output": 10, "total": 30}
    assert data[0]["input"] == "What is the capital of France?"


def test_writer_turns_the_collector_back_on(served: Served) -> None:
    """The writer pauses garbage collection for a batch only: afterwards it is on, and stays off in a
    process that had turned it off."""
    body = export_request([otlp_span("a", llm_attributes())]).SerializeToString()
    assert gc.isenabled()
    assert (
        served.client.post("/v1/traces", content=body, headers={**PROTOBUF, **served.auth}).status_code == 200
    )
    served.drain()
    assert gc.isenabled()
    gc.disable()
    try:
        body = export_request([otlp_span("b", llm_attributes())]).SerializeToString()
        served.client.post("/v1/traces", content=body, headers={**PROTOBUF, **served.auth})
        served.drain()
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert served.store.count_spans() == 2


def test_json_and_gzip_exports(served: Served) -> None:
    span = otlp_span("json-span", llm_attributes(model="m-json"))
    body = MessageToDict(export_request([span]))
    # OTLP/JSON uses hex ids, not protobuf-JSON base64
    s = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    s["traceId"], s["spanId"] = span.trace_id.hex(), span.span_id.hex()
    r = served.client.post("/v1/traces", json=body, headers=served.auth)
    assert r.status_code == 200, r.text
    span2 = otlp_span("gzip-span", llm_attributes(model="m-gzip"))
    r = served.client.post(
        "/v1/traces",
        content=gzip.compress(export_request([span2]).SerializeToString()),
        headers={**PROTOBUF, **served.auth, "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    served.drain()
    names = {t["name"] for t in served.client.get("/api/traces", headers=served.auth).json()["data"]}
    assert names == {"json-span", "gzip-span"}


def _json_export(attribute: dict[str, Any]) -> bytes:
    """An OTLP/JSON export of one span with ``attribute``."""
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "s", "attributes": [attribute]}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def test_an_attribute_of_an_unexpected_type_is_stored(served: Served) -> None:
    # A valid export whose second span has a list where the operation's name belongs (it crashed
    # the normaliser, and the whole export was lost)
    odd = {"key": "gen_ai.operation.name", "value": {"arrayValue": {"values": [{"stringValue": "chat"}]}}}
    body = json.loads(_json_export(odd))
    spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.insert(0, {**spans[0], "spanId": "ef" * 8, "name": "plain", "attributes": []})
    r = served.client.post("/v1/traces", json=body, headers=served.auth)
    assert r.status_code == 200, r.text
    served.drain()
    detail = served.client.get(f"/api/traces/{'ab' * 16}", headers=served.auth).json()
    assert {o["name"] for o in detail["observations"]} == {"plain", "s"}


def test_malformed_bodies_get_400_and_store_nothing(served: Served) -> None:
    good = otlp_span("good", llm_attributes())
    cases = [
        (b"\xff\xfe not protobuf", PROTOBUF),
        (b"{not json", {"Content-Type": "application/json"}),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz", "spanId": "00"}]}]}]}',
            {"Content-Type": "application/json"},
        ),
        (b"not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}),
        (export_request([good]).SerializeToString(), {"Content-Type": "text/plain"}),
        (_json_export({"key": "n", "value": {"intValue": str(2**64)}}), {"Content-Type": "application/json"}),
    ]
    for body, headers in cases:
        r = served.client.post("/v1/traces", content=body, headers={**headers, **served.auth})
        assert r.status_code in (400, 415) and r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error"
    # A request mixing one valid span and one with a bad id stores nothing at all.
    bad = otlp_span("bad", {})
    bad.span_id = b"\x01"
    r = served.client.post(
        "/v1/traces",
        content=export_request([good, bad]).SerializeToString(),
        headers={**PROTOBUF, **served.auth},
    )
    assert r.status_code == 400
    served.drain()
    assert served.store.count_spans() == 0


def test_auth_errors(served: Served) -> None:
    body = export_request([otlp_span("x", {})]).SerializeToString()
    r = served.client.post("/v1/traces", content=body, headers=PROTOBUF)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = served.client.post(
        "/v1/traces", content=body, headers={**PROTOBUF, "Authorization": "Bearer ph-nope"}
    )
    assert r.status_code == 401
    _, read_only = served.store.create_api_key(
        "p1", "ro", frozenset({__import__("pilothouse.domain.keys").domain.keys.Scope.READ})
    )
    r = served.client.post(
        "/v1/traces", content=body, headers={**PROTOBUF, "Authorization": f"Bearer {read_only}"}
    )
    assert r.status_code == 403


def test_body_over_limit_is_413(tmp_path: Path) -> None:
    for served in serve(tmp_path, max_body_bytes=1000):
        spans = [otlp_span(f"s{i}", llm_attributes()) for i in range(20)]
        r = served.client.post(
            "/v1/traces",
            content=export_request(spans).SerializeToString(),
            headers={**PROTOBUF, **served.auth},
        )
        assert r.status_code == 413
        assert served.store.count_spans() == 0


def test_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    for served in serve(tmp_path, ingest_queue_spans=5):
        spans = [otlp_span(f"s{i}", {}) for i in range(6)]
        r = served.client.post(
            "/v1/traces",
            content=export_request(spans).SerializeToString(),
            headers={**PROTOBUF, **served.auth},
        )
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "ingest_backpressure"
        served.drain()
        assert served.store.count_spans() == 0
        r = served.client.post(
            "/v1/traces",
            content=export_request(spans[:5]).SerializeToString(),
            headers={**PROTOBUF, **served.auth},
        )
        assert r.status_code == 200


def test_secrets_in_span_attributes_are_not_stored(served: Served) -> None:
    """What instrumentations capture can hold credentials: request headers (OpenTelemetry's
    ``http.request.header.*`` attributes, every value redacted), URLs with a password or a key in the
    query, metadata named ``api_key``. They are stored redacted; the rest of the span as it came."""
    key = "sk-proj-" + "Z9" * 16
    attributes = {
        **llm_attributes(prompt=3, completion=2),
        "http.request.header.authorization": [f"Bearer {key}"],
        "http.request.header.x-api-key": [key],
        "http.request.header.content-type": ["application/json"],
        "url.full": "https://bob:HUNTER2@api.example/v1/chat?api_key=QK1&limit=10",
        "url.query": "key=AIzaQK2&page=2",
        "langfuse.trace.metadata.apiKey": "MK3",
        "db.connection_string": "postgresql://app:PGPW4@db:5432/app",
        "gen_ai.server.time_per_output_token": 0.02,
    }
    span = otlp_span("chat", attributes, trace_id=bytes.fromhex("cd" * 16))
    r = served.client.post(
        "/v1/traces", content=export_request([span]).SerializeToString(), headers={**PROTOBUF, **served.auth}
    )
    assert r.status_code == 200, r.text
    served.drain()
    detail = served.client.get(f"/api/traces/{'cd' * 16}", headers=served.auth)
    assert detail.status_code == 200
    shown = detail.text
    for secret in (key, "HUNTER2", "QK1", "AIzaQK2", "MK3", "PGPW4"):
        assert secret not in shown
    (observation,) = detail.json()["observations"]
    stored = observation["attributes"]
    assert stored["http.request.header.authorization"] == "<redacted>"
    assert stored["http.request.header.x-api-key"] == "<redacted>"
    assert stored["http.request.header.content-type"] == "<redacted>"  # every header's value
    assert stored["gen_ai.server.time_per_output_token"] == 0.02  # a count's token is no secret
    assert stored["url.full"] == "https://bob:<redacted>@api.example/v1/chat?api_key=<redacted>&limit=10"
    assert stored["url.query"] == "key=<redacted>&page=2"
    assert stored["db.connection_string"] == "postgresql://app:<redacted>@db:5432/app"
    assert observation["usage"]["input"] == 3  # the model call itself is read as before
