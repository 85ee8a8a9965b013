"""Issue 21, classes 1-4: no request can exhaust the server, nor spoil another tenant's ingest.

gzip bombs stop at the decompressed cap; large bodies are decompressed and checked off the event loop;
an export's attributes, values, spans and bytes are bounded; metric labels name configured models
only; poison spans are rejected at decode and never reach the batch writer. All in this process,
over the app's real HTTP surface (TestClient) and a real SQLite store."""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from sqlalchemy import event

from pilothouse.domain.traces import Observation, SpanRecord, TraceAttributes
from pilothouse.server.ingest import IngestQueue
from pilothouse.store.sql import SqlStore
from tests.server.conftest import Served, serve
from tests.spans import export_request, llm_attributes, otlp_span

PROTOBUF = {"Content-Type": "application/x-protobuf"}
MAX_MODEL_NAME_CHARS = (
    200  # domain.traces.MAX_MODEL_NAME_CHARS, written out: the tests run against older code too
)
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Served]:
    yield from serve(
        tmp_path,
        max_decompressed_bytes=4 * 1024 * 1024,
        max_span_attributes=16,
        max_attribute_value_bytes=1024,
        max_export_spans=50,
        max_export_values=2_000,
    )


def _post(served: Served, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return served.client.post("/v1/traces", content=body, headers={**headers, **served.auth})


def _stored(served: Served) -> list[dict[str, Any]]:
    served.drain()
    out = []
    for t in served.client.get("/api/traces", headers=served.auth).json()["data"]:
        detail = served.client.get(f"/api/traces/{t['id']}", headers=served.auth).json()
        out.extend(detail["observations"])
    return out


# -- 1. gzip bombs ----------------------------------------------------------------------------------


def _bomb(decompressed: int) -> bytes:
    return gzip.compress(b"\0" * decompressed, compresslevel=9)


def test_a_gzip_bomb_gets_413_without_decompressing_it_all(limited: Served) -> None:
    bomb = _bomb(64 * 1024 * 1024)  # ~64 KiB on the wire, 16 times the 4 MiB cap
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        r = _post(limited, bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "body_too_large" and "limit" in r.json()["error"]["message"]
    assert peak < 16 * 1024 * 1024  # the cap and a chunk, never the whole 64 MiB
    for encoding, data in (("deflate", b"\x78\x9c" + b"garbage"), ("gzip", gzip.compress(b"x" * 1000)[:-12])):
        r = _post(limited, data, {**PROTOBUF, "Content-Encoding": encoding})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_otlp", r.text
    # A legitimate export of several gzip members, and one in zlib (deflate): read whole
    span1, span2 = otlp_span("one", llm_attributes()), otlp_span("two", llm_attributes())
    two = gzip.compress(export_request([span1]).SerializeToString()) + gzip.compress(
        export_request([span2]).SerializeToString()
    )
    assert _post(limited, two, {**PROTOBUF, "Content-Encoding": "gzip"}).status_code == 200
    assert {o["name"] for o in _stored(limited)} == {"one", "two"}
    # 200,000 empty members (4 MB): each member copied the rest of the body, on the event loop
    r = _post(limited, gzip.compress(b"") * 200_000, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "more than 16 gzip members" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("kind", ["gzip bomb", "large JSON"])
def test_large_bodies_are_processed_off_the_event_loop(limited: Served, kind: str) -> None:
    """While a large body waits for (or takes) its turn to be decompressed and checked in a thread,
    the server answers /health: the event loop is not the one doing the work."""
    if kind == "gzip bomb":
        body, headers = _bomb(32 * 1024 * 1024), {**PROTOBUF, "Content-Encoding": "gzip"}
        expected = 413
    else:
        spans = [otlp_span(f"s{i}", {"input.value": "x" * 1900}) for i in range(40)]
        body, headers = _json_body(spans), JSON
        expected = 200
        assert len(body) > 64 * 1024
    state = limited.client.app.state.pilothouse  # type: ignore[attr-defined]
    slots = state.decode_slots
    portal = limited.client.portal  # type: ignore[attr-defined]
    portal.call(slots.acquire)  # the slot taken: the large body must wait for it
    events: list[str] = []
    results: list[httpx.Response] = []

    def send() -> None:
        results.append(_post(limited, body, headers))
        events.append("large body answered")

    sender = threading.Thread(target=send)
    sender.start()
    try:
        while not slots._waiters:  # the request is parked on the semaphore (asyncio's own state)
            sender.join(0.01)
            assert sender.is_alive(), results[0].text if results else "the request ended without waiting"
        r = limited.client.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        events.append("health answered")
    finally:
        portal.call(slots.release)
        sender.join(30)
    assert events == ["health answered", "large body answered"]
    assert results[0].status_code == expected, results[0].text


# -- 2. amplification within limits ------------------------------------------------------------------


def _json_body(spans: list[Any]) -> bytes:
    from google.protobuf.json_format import MessageToDict

    body = MessageToDict(export_request(spans))
    for s, span in zip(body["resourceSpans"][0]["scopeSpans"][0]["spans"], spans, strict=True):
        s["traceId"], s["spanId"] = span.trace_id.hex(), span.span_id.hex()
    return json.dumps(body).encode()


@pytest.mark.parametrize("wire", ["protobuf", "json"])
def test_attributes_past_the_limits_are_left_out_or_cut_and_marked(limited: Served, wire: str) -> None:
    attributes = {**llm_attributes(model="m"), "big": "é" * 5000, **{f"extra.{i}": i for i in range(200)}}
    span = otlp_span("amplified", attributes)
    if wire == "protobuf":
        r = _post(limited, export_request([span]).SerializeToString(), PROTOBUF)
    else:
        r = _post(limited, _json_body([span]), JSON)
    assert r.status_code == 200, r.text
    [stored] = _stored(limited)
    attrs = stored["attributes"]
    assert attrs["pilothouse.dropped_attributes"] > 180  # 216 sent, 16 kept
    assert len([k for k in attrs if k.startswith("extra.")]) < 16
    assert attrs["big"] == "é" * 512  # 1,024 bytes of UTF-8, cut on a character
    assert attrs["pilothouse.truncated_values"] == 1


def test_exports_past_the_per_request_limits_get_413(limited: Served) -> None:
    many_spans = export_request([otlp_span(f"s{i}", {}) for i in range(51)]).SerializeToString()
    many_values = export_request(
        [otlp_span(f"s{i}", {"list": list(range(100))}) for i in range(21)]
    ).SerializeToString()
    for body in (many_spans, many_values):
        r = _post(limited, body, PROTOBUF)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", r.text
    json_values = _json_body([otlp_span(f"s{i}", {"list": list(range(100))}) for i in range(21)])
    assert _post(limited, json_values, JSON).status_code == 413
    # events and links count as values: 5 million empty events were 107 KB gzipped and 1.2 GB of RSS
    for field in ("events", "links"):
        span = otlp_span("many", {})
        for _ in range(5000):
            getattr(span, field).add()
        r = _post(limited, export_request([span]).SerializeToString(), PROTOBUF)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", (field, r.text)
        doc = json.loads(_json_body([otlp_span("many", {})]))
        doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0][field] = [{}] * 5000
        assert _post(limited, json.dumps(doc).encode(), JSON).status_code == 413, field
    assert limited.store.count_spans() == 0


def test_the_queue_is_bounded_in_bytes(tmp_path: Path) -> None:
    """Exports wait in the queue while the store is busy; past the byte budget the collector answers
    429 with Retry-After (an export that could never fit gets 413)."""
    for served in serve(tmp_path, ingest_queue_bytes=10_000):
        body = export_request([otlp_span("big", {"input.value": "x" * 6_000})]).SerializeToString()
        assert 6_000 < len(body) < 10_000
        with sqlite3.connect(tmp_path / "api.db", isolation_level=None) as held:
            held.execute("BEGIN IMMEDIATE")  # the writer cannot store anything meanwhile
            try:
                assert _post(served, body, PROTOBUF).status_code == 200
                r = _post(served, body, PROTOBUF)  # 2 x 6 KB > 10 KB, whether pending or being written
                assert r.status_code == 429 and r.headers["Retry-After"], r.text
                assert r.json()["error"]["code"] == "ingest_backpressure"
            finally:
                held.execute("ROLLBACK")
        served.drain()
        assert served.store.count_spans() == 1
        assert _post(served, body, PROTOBUF).status_code == 200  # room again
        huge = export_request([otlp_span("huge", {"input.value": "x" * 12_000})]).SerializeToString()
        r = _post(served, huge, PROTOBUF)
        assert r.status_code == 413 and "budget" in r.json()["error"]["message"], r.text


# -- 3. label cardinality ----------------------------------------------------------------------------


def test_metrics_label_only_configured_models_and_stored_names_are_capped(tmp_path: Path) -> None:
    config = tmp_path / "pilothouse.yaml"
    config.write_text("models:\n  - {name: sim, provider: sim, model: sim-1}\n")
    for served in serve(tmp_path, config=config):
        _label_attack(served)


def _label_attack(served: Served) -> None:
    r = served.client.post(
        "/v1/chat/completions",
        json={"model": "sim", "messages": [{"role": "user", "content": "hi"}]},
        headers=served.auth,
    )
    assert r.status_code == 200, r.text
    names = [f"model-{i}-" + "x" * 10_000 for i in range(5)]
    for name in names:
        r = served.client.post(
            "/v1/chat/completions",
            json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
            headers=served.auth,
        )
        assert r.status_code == 404, r.text
        assert len(r.content) < 1_000  # the name is quoted cut short (the message is stored too)
    otlp = otlp_span("client call", llm_attributes(model="y" * 50_000))
    assert _post(served, export_request([otlp]).SerializeToString(), PROTOBUF).status_code == 200
    metrics = served.client.get("/metrics").text
    assert 'model="unknown"' in metrics and 'model="sim"' in metrics and "xxxxxxxx" not in metrics
    assert len(metrics) < 20_000
    stored = _stored(served)
    assert len(stored) == 7
    for o in stored:
        assert len(o["status_message"] or "") < 1_000 and len(o["name"]) <= 1_000
        assert o["model"] is None or len(o["model"]) <= MAX_MODEL_NAME_CHARS
        assert o["request_model"] is None or len(o["request_model"]) <= MAX_MODEL_NAME_CHARS
    assert any(o["model"] == "y" * MAX_MODEL_NAME_CHARS for o in stored)


# -- 4. poison records -------------------------------------------------------------------------------


def test_poison_protobuf_spans_are_rejected_alone_with_partial_success(served: Served) -> None:
    good = otlp_span("good", llm_attributes())
    poison = otlp_span("poison", {})
    poison.start_time_unix_nano = 2**64 - 1
    r = _post(served, export_request([good, poison]).SerializeToString(), PROTOBUF)
    assert r.status_code == 200, r.text
    response = ExportTraceServiceResponse.FromString(r.content)
    assert response.partial_success.rejected_spans == 1
    assert "start_time_unix_nano 18446744073709551615 is outside 1970-2200" in (
        response.partial_success.error_message
    )
    assert [o["name"] for o in _stored(served)] == ["good"]
    r = _post(served, export_request([poison]).SerializeToString(), PROTOBUF)
    assert r.status_code == 400 and "outside 1970-2200" in r.json()["error"]["message"]
    ingest = served.client.app.state.pilothouse.ingest  # type: ignore[attr-defined]
    assert ingest.stats.failed == 0


@pytest.mark.parametrize(
    "poison",
    [
        {"name": {"an": "object"}},
        {"startTimeUnixNano": 1e30},
        {"endTimeUnixNano": str(2**64 - 1)},
        {"startTimeUnixNano": -5},
        {"status": {"message": {"an": "object"}}},
        {"status": {"code": "x" * 0 or 1.5}},
        {"events": [{"name": "e", "timeUnixNano": 2**70}]},
        {"attributes": [{"key": "k", "value": {"stringValue": {"an": "object"}}}]},
    ],
    ids=str,
)
def test_poison_json_spans_are_rejected_alone(served: Served, poison: dict[str, Any]) -> None:
    good = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "good", "startTimeUnixNano": "1"}
    bad = {**good, "spanId": "ef" * 8, **poison}
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [good, bad]}]}]}
    r = _post(served, json.dumps(body).encode(), JSON)
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and partial["errorMessage"].startswith("1 span(s) rejected")
    assert [o["name"] for o in _stored(served)] == ["good"]
    alone = {"resourceSpans": [{"scopeSpans": [{"spans": [bad]}]}]}
    r = _post(served, json.dumps(alone).encode(), JSON)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_otlp"


def test_the_writer_never_falls_back_to_one_transaction_per_span(served: Served) -> None:
    """A batch that cannot be written is retried whole, then counted as failed: never split into a
    transaction per span (which let one tenant's bad export slow everyone's ingest tenfold)."""
    # a store of its own over the same database: the app's background jobs commit on the app's engine
    store = SqlStore.from_url(served.store.engine.url.render_as_string(hide_password=False))
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))  # real commits, counted
    queue = IngestQueue(store, retry_delays_s=(0.0,), linger_s=0.0)
    try:
        now = 1_700_000_000 * 10**9
        good = SpanRecord(
            "p1",
            Observation(trace_id="01" * 16, id="02" * 8, name="good", start_ns=now, end_ns=now),
            TraceAttributes(),
        )
        unwritable = SpanRecord(
            "p1",
            Observation(trace_id="03" * 16, id="04" * 8, name="bad", start_ns=2**64 - 1, end_ns=2**64 - 1),
            TraceAttributes(),
        )
        assert queue.offer([good, unwritable])
        assert queue.wait_idle(10)
    finally:
        queue.close()
        store.close()
    assert queue.stats.failed == 2 and queue.stats.written == 0
    assert commits == []  # on main the fallback committed the good span alone


@pytest.mark.slow  # starts the JSON worker process
def test_large_json_is_parsed_in_a_worker_process_with_the_same_result(tmp_path: Path) -> None:
    """A JSON export past the worker threshold gets the same checks, limits and partial success as a
    small one: the worker parses and checks it, the C reader (or upb) applies the limits."""
    for served in serve(tmp_path, max_span_attributes=4, max_attribute_value_bytes=10, max_export_spans=1000):
        spans = [
            otlp_span(f"s{i}", {"input.value": "é" * 3000, **{f"k{j}": j for j in range(8)}})
            for i in range(200)
        ]
        doc = json.loads(_json_body(spans))
        doc["resourceSpans"][0]["scopeSpans"][0]["spans"][7]["startTimeUnixNano"] = 1e30
        body = json.dumps(doc).encode()
        assert len(body) > 1024 * 1024  # past JSON_PROCESS_BYTES
        r = _post(served, gzip.compress(body), {**JSON, "Content-Encoding": "gzip"})
        assert r.status_code == 200, r.text
        assert r.json()["partialSuccess"]["rejectedSpans"] == "1"
        stored = _stored(served)  # the first page
        assert served.store.count_spans() == 199 and "s7" not in {o["name"] for o in stored}
        attrs = stored[0]["attributes"]
        assert attrs["pilothouse.dropped_attributes"] == 5 and attrs["pilothouse.truncated_values"] == 1
        state = served.client.app.state.pilothouse  # type: ignore[attr-defined]
        assert state.json_decoder._pool is not None  # the worker did it
