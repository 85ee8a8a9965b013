"""POST /v1/logs (GenAI log events joined to their span) and POST /v1/metrics, with the real export
requests of the corpus (tests/corpus: opentelemetry-instrumentation-openai-v2 2.1b0 sends the
message content as log events)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.conftest import Served

PROTOBUF = {"Content-Type": "application/x-protobuf"}
CORPUS = Path(__file__).parents[1] / "corpus" / "payloads" / "otel-genai-v1"


@pytest.mark.slow  # two exports through the writer and the store: about 0.4 s
def test_genai_log_events_become_events_of_their_span(served: Served) -> None:
    headers = {**PROTOBUF, **served.auth}
    traces = served.client.post("/v1/traces", content=(CORPUS / "chat.pb").read_bytes(), headers=headers)
    logs = served.client.post("/v1/logs", content=(CORPUS / "chat.logs.pb").read_bytes(), headers=headers)
    assert traces.status_code == 200 and logs.status_code == 200, logs.text
    assert logs.headers["content-type"] == "application/x-protobuf"
    served.drain()
    (trace,) = served.client.get("/api/traces", headers=served.auth).json()["data"]
    body = served.client.get(f"/api/traces/{trace['id']}", headers=served.auth).json()
    by_name = {o["name"]: o for o in body["observations"]}
    call = by_name["chat gpt-4o-mini"]
    events = [o for o in body["observations"] if o["type"] == "event"]
    assert {o["name"] for o in events} == {"gen_ai.system.message", "gen_ai.user.message", "gen_ai.choice"}
    assert all(o["parent_id"] == call["id"] and o["depth"] == call["depth"] + 1 for o in events)
    assert by_name["gen_ai.system.message"]["input"] == {"content": "You are a terse assistant."}  # the body
    assert by_name["gen_ai.choice"]["output"]["message"]["content"] == "Hello from the simulated upstream!"
    assert body["usage"]["total"] == 32  # the events carry no tokens: the call counts once


def test_bad_log_exports_get_clear_errors(served: Served) -> None:
    headers = {**PROTOBUF, **served.auth}
    r = served.client.post("/v1/logs", content=b"\xff\xff\xff", headers=headers)
    assert r.status_code == 400 and "ExportLogsServiceRequest" in r.text
    r = served.client.post(
        "/v1/logs", content=b"{}", headers={"Content-Type": "application/json", **served.auth}
    )
    assert r.status_code == 400 and "application/x-protobuf" in r.text
    r = served.client.post("/v1/logs", content=(CORPUS / "chat.logs.pb").read_bytes(), headers=PROTOBUF)
    assert r.status_code == 401


def test_metrics_are_accepted_quietly(served: Served) -> None:
    r = served.client.post("/v1/metrics", content=b"", headers={**PROTOBUF, **served.auth})
    assert r.status_code == 200 and r.content == b""
    r = served.client.post(
        "/v1/metrics", content=b"{}", headers={"Content-Type": "application/json", **served.auth}
    )
    assert r.status_code == 200 and r.json() == {}
    assert served.client.post("/v1/metrics", content=b"", headers=PROTOBUF).status_code == 401
