"""The attacker's pass on ``POST /v1/logs``: a log record is checked at decode as a span is (times
that can be stored, values counted and bounded), so one tenant's log export can neither fail a batch
of every tenant's spans in the writer nor hold memory past the limits. Over the app's real HTTP
surface (TestClient) and a real SQLite store."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.server.conftest import Served, serve
from tests.spans import export_request, otlp_span

PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path, max_export_values=2_000)


def _record(time_ns: int, body: AnyValue | None = None, **attributes: Any) -> LogRecord:
    record = LogRecord(
        time_unix_nano=time_ns,
        event_name="gen_ai.user.message",
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        attributes=[KeyValue(key=k, value=AnyValue(string_value=str(v))) for k, v in attributes.items()],
    )
    if body is not None:
        record.body.CopyFrom(body)
    return record


def _logs(*records: LogRecord) -> bytes:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.extend(records)
    return request.SerializeToString()


def _post_logs(served: Served, body: bytes) -> Any:
    return served.client.post("/v1/logs", content=body, headers={**PROTOBUF, **served.auth})


@pytest.mark.parametrize("bad_time", [2**64 - 1, 2**63, 2**63 - 1])
def test_a_log_record_with_a_time_that_cannot_be_stored_is_refused_at_decode(
    served: Served, bad_time: int
) -> None:
    r = _post_logs(served, _logs(_record(bad_time, AnyValue(string_value="hi"))))
    assert r.status_code == 400, r.text
    assert "1970-2200" in r.json()["error"]["message"]
    # nothing reached the writer: no batch failed there (it would have taken other tenants' spans along)
    served.drain()
    stats = served.client.app.state.pilothouse.ingest.stats  # type: ignore[attr-defined]
    assert stats.failed == 0


def test_one_bad_log_record_among_good_ones_is_rejected_alone_with_partial_success(served: Served) -> None:
    now = time.time_ns()
    good = _record(now, AnyValue(string_value="kept"))
    r = _post_logs(served, _logs(good, _record(2**64 - 1, AnyValue(string_value="poison"))))
    assert r.status_code == 200, r.text
    answer = ExportLogsServiceResponse.FromString(r.content)
    assert answer.partial_success.rejected_log_records == 1
    assert "1970-2200" in answer.partial_success.error_message
    # another tenant's spans, queued right after, are written with the good record
    other = {**PROTOBUF, "Authorization": f"Bearer {served.other_key}"}
    spans = export_request([otlp_span("other tenant", {"k": "v"})]).SerializeToString()
    assert served.client.post("/v1/traces", content=spans, headers=other).status_code == 200
    served.drain()
    stats = served.client.app.state.pilothouse.ingest.stats  # type: ignore[attr-defined]
    assert stats.failed == 0
    other_auth = {"Authorization": f"Bearer {served.other_key}"}
    assert len(served.client.get("/api/traces", headers=other_auth).json()["data"]) == 1


def test_log_bodies_count_toward_the_export_value_limit(served: Served) -> None:
    # 3,000 values nested in one record's body: past max_export_values (2,000 here); with no count,
    # 64 MiB of such values (a 100 KB gzip body) became tens of millions of Python objects
    many = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=i) for i in range(3_000)]))
    r = _post_logs(served, _logs(_record(time.time_ns(), many)))
    assert r.status_code == 413, r.text
    assert "attribute values" in r.json()["error"]["message"]


def test_strings_nested_in_a_log_body_are_cut_to_the_value_limit(tmp_path: Path) -> None:
    for served in serve(tmp_path, max_attribute_value_bytes=1024):
        long = AnyValue(string_value="x" * 100_000)
        nested = AnyValue(array_value=ArrayValue(values=[long, long]))
        r = _post_logs(served, _logs(_record(time.time_ns(), nested, note="y" * 5_000)))
        assert r.status_code == 200, r.text
        served.drain()
        (trace,) = served.client.get("/api/traces", headers=served.auth).json()["data"]
        detail = served.client.get(f"/api/traces/{trace['id']}", headers=served.auth).json()
        (event,) = [o for o in detail["observations"] if o["type"] == "event"]
        assert [len(text) for text in event["input"]] == [1024, 1024]
        assert len(event["attributes"]["note"]) == 1024
