"""The durable mode's write-ahead spool: framing, torn tails, group commit, segments, and the replay
at start-up (idempotent, costs back in the budgets). The kill -9 drill is in test_durable.py."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from pilothouse.domain.budgets import BudgetPeriod, BudgetScope
from pilothouse.domain.keys import DEFAULT_SCOPES
from pilothouse.domain.money import Money
from pilothouse.domain.queries import TraceQuery
from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)
from pilothouse.server import Settings, create_app
from pilothouse.server.durable import replay_spool
from pilothouse.server.ingest import IngestQueue, PendingExport
from pilothouse.server.spool import Spool, SpoolInUse, read_segment
from pilothouse.server.spool_records import otlp_record, read_otlp, read_spans, span_records
from pilothouse.store.costs import CostStore
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head
from tests.spans import export_request, llm_attributes, otlp_span


def _segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.wal"))


def test_records_read_back_in_order_and_a_torn_tail_is_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    payloads = [b"first", b"x" * 10_000, b""]
    for payload in payloads:
        spool.append(payload)
    spool.flush_sync()
    (path,) = _segments(tmp_path / "spool")
    assert read_segment(path) == (payloads, 0)
    # a crash in the middle of a write: a header and part of its payload
    spool.append(b"never acknowledged: the process died before its fsync")
    spool.flush_sync()
    size = path.stat().st_size
    os.truncate(path, size - 10)
    records, torn = read_segment(path)
    assert records == payloads and torn == size - 10 - sum(8 + len(p) for p in payloads) - 8
    # a flipped byte in the last record: its CRC does not check
    data = bytearray(path.read_bytes()[: size - 10 - torn])
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert read_segment(path) == (payloads[:2], 8 + len(payloads[2]))
    spool.close()


def test_concurrent_requests_share_one_fsync(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")

    async def requests() -> None:
        async def one(i: int) -> None:
            spool.append(f"record {i}".encode())
            await spool.flush()

        await asyncio.gather(*(one(i) for i in range(50)))

    asyncio.run(requests())
    assert spool.stats.records == 50 and spool.unflushed == 0
    # 50 requests, each answered after its record was fsynced: the first flush and one for the rest
    assert spool.stats.fsyncs <= 3
    (path,) = _segments(tmp_path / "spool")
    assert len(read_segment(path)[0]) == 50
    spool.close()


def test_segments_rotate_and_are_deleted_once_committed(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = Spool(folder, segment_bytes=1000)
    ids = [spool.append(b"r" * 300) for _ in range(9)]
    spool.flush_sync()
    assert len(set(ids)) == 3 and len(_segments(folder)) == 3
    spool.done(ids[:3])  # the first segment's records are committed (the batch writer's call)
    spool.append(b"more")
    spool.flush_sync()
    assert [p.name for p in _segments(folder)] == [f"{i:012d}.wal" for i in sorted(set(ids))[1:]]
    spool.done(ids[3:])
    spool.close()  # everything committed: nothing is left to replay
    # the last segment stays: "more" was never committed (its others were: a replay skips them)
    reopened = Spool(folder)
    assert [read_segment(p)[0] for p in reopened.leftover] == [[b"r" * 300] * 3 + [b"more"]]
    reopened.close()


def test_one_process_holds_a_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    with pytest.raises(SpoolInUse, match="in use by another server process"):
        Spool(tmp_path / "spool")
    spool.close()
    Spool(tmp_path / "spool").close()
    assert oct((tmp_path / "spool").stat().st_mode & 0o777) == "0o700"


def _gateway_span(key_id: str, cost_usd: str, trace_id: str | None = None) -> SpanRecord:
    now = time.time_ns()
    observation = Observation(
        trace_id=trace_id or os.urandom(16).hex(),
        id=os.urandom(8).hex(),
        name="chat sim",
        start_ns=now,
        end_ns=now + 1_000_000,
        kind=ObservationKind.GENERATION,
        status=Status.OK,
        input='[{"role": "user", "content": "hi"}]',
        output="hello",
        attributes={"gateway.key_id": key_id, "gateway.attempts": [{"deployment": "sim", "ok": True}]},
        provider="sim",
        request_model="sim",
        model="sim",
        model_parameters={"max_tokens": 5},
        usage=Usage(input=10, output=5),
        cost=Cost({"input": Money.from_usd(cost_usd), "output": Money.ZERO}, "test", Money.from_usd("0.5")),
        ttft_ns=1000,
    )
    # as the gateway records it: metered (its cost counts toward budgets)
    return SpanRecord("p1", observation, TraceAttributes(user_id="u1", tags=("a", "b")), metered=True)


def test_each_database_has_its_own_spool_folder_named_without_credentials(tmp_path: Path) -> None:
    def folder(url: str) -> Path:
        return Settings(home=tmp_path, database_url=url).resolved_spool_dir  # type: ignore[call-arg]

    pg = "postgresql://bob:HUNTER2@db:5432/traces"
    assert folder(pg) == folder("postgresql://db:5432/traces")  # the password is not hashed in
    assert folder(pg) != folder("postgresql://db:5432/other") != folder("sqlite:///x.db")
    assert folder(pg).parent == tmp_path / "spool" and "HUNTER2" not in str(folder(pg))
    given = Settings(home=tmp_path, spool_dir=tmp_path / "s")  # type: ignore[call-arg]
    assert given.resolved_spool_dir == tmp_path / "s"


def test_span_records_and_otlp_bodies_read_back_exactly() -> None:
    record = _gateway_span("k1", "0.000000000001")
    assert read_spans(span_records([record])) == [record]
    assert read_otlp(otlp_record("p1", "application/x-protobuf", "gzip", b"\x00body")) == (
        "p1",
        "application/x-protobuf",
        "gzip",
        b"\x00body",
    )


def _durable_app(tmp_path: Path, store: SqlStore) -> TestClient:
    settings = Settings(home=tmp_path, durable=True, spool_dir=tmp_path / "spool")  # type: ignore[call-arg]
    return TestClient(create_app(settings, store=store))


def test_start_up_replays_what_a_killed_process_acknowledged_once(tmp_path: Path) -> None:
    store = SqlStore.from_url(sqlite_at_head(tmp_path / "replay.db"))
    api_key, secret = store.create_api_key("p1", "test", frozenset(DEFAULT_SCOPES))
    budget = CostStore(store).create_budget(
        "p1", BudgetScope.KEY, api_key.id, BudgetPeriod.MONTH, Money.from_usd(10)
    )
    # What a killed process left: an OTLP export and two gateway calls, fsynced, never committed ...
    spool = Spool(tmp_path / "spool")
    spans = [otlp_span("agent step", llm_attributes(), duration_ms=5) for _ in range(3)]
    body = export_request(spans).SerializeToString()
    spool.append(otlp_record("p1", "application/x-protobuf", None, body))
    calls = [_gateway_span(api_key.id, "0.25"), _gateway_span(api_key.id, "0.5")]
    spool.append(span_records(calls[:1]))
    spool.append(span_records(calls[1:]))
    # ... one of which the store had already committed before the kill (its segment not yet deleted)
    store.write_spans(calls[:1])
    spool.append(b"\x00" * 3)  # and a torn record at the end
    spool.flush_sync()
    path = _segments(tmp_path / "spool")[0]
    os.truncate(path, path.stat().st_size - 2)
    spool.close()
    assert _segments(tmp_path / "spool")

    with _durable_app(tmp_path, store) as client:
        auth = {"Authorization": f"Bearer {secret}"}
        # stored before the first request is answered, each span once
        assert store.count_spans("p1") == 5
        page = store.list_traces("p1", TraceQuery(limit=50))
        assert {t.trace.id for t in page.data} >= {c.observation.trace_id for c in calls}
        assert sum(t.trace.observation_count for t in page.data) == 5
        # the replayed calls' cost is in the budget's spend, counted once
        (listed,) = client.get("/api/budgets", headers=auth).json()["data"]
        assert listed["id"] == budget.id and listed["spent_usd"] == 0.75
        assert not _segments(tmp_path / "spool")  # replayed, then deleted
    store.close()


def test_durable_mode_acknowledges_spans_and_gateway_calls_from_the_spool(tmp_path: Path) -> None:
    """What a 200 acknowledged (an export, a call, a whole stream) is fsynced on the spool when the
    client reads the answer, whatever the batch writer has done by then: kill -9 at that moment
    would lose nothing (the process drill is test_durable.py). A clean stop leaves no spool."""
    store = SqlStore.from_url(sqlite_at_head(tmp_path / "ack.db"))
    _, secret = store.create_api_key("p1", "test", frozenset(DEFAULT_SCOPES))
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  - name: sim\n    provider: sim\n")
    settings = Settings(  # type: ignore[call-arg]
        home=tmp_path, durable=True, spool_dir=tmp_path / "spool", config=config
    )
    with TestClient(create_app(settings, store=store)) as client:
        auth = {"Authorization": f"Bearer {secret}"}
        spans = [otlp_span("step", llm_attributes(), duration_ms=5) for _ in range(4)]
        r = client.post(
            "/v1/traces",
            content=export_request(spans).SerializeToString(),
            headers={**auth, "Content-Type": "application/x-protobuf"},
        )
        assert r.status_code == 200
        chat = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        r = client.post("/v1/chat/completions", json=chat, headers=auth)
        assert r.status_code == 200
        trace_id = r.headers["x-pilothouse-trace-id"]
        r = client.post("/v1/chat/completions", json={**chat, "stream": True}, headers=auth)
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        stream_trace = r.headers["x-pilothouse-trace-id"]
        services = client.app.state.pilothouse  # type: ignore[attr-defined]
        assert services.spool.unflushed == 0
        segments = _segments(tmp_path / "spool")
        on_disk = [read_spans(p) for s in segments for p in read_segment(s)[0] if p[:1] == b"S"]
        assert {r.observation.trace_id for records in on_disk for r in records} == {trace_id, stream_trace}
        services.ingest.wait_idle(10)
    assert store.count_spans("p1") == 6
    assert not _segments(tmp_path / "spool")  # a clean stop: everything committed, nothing to replay
    store.close()


def test_a_batch_the_database_refuses_stays_on_the_spool_for_the_next_start(tmp_path: Path) -> None:
    store = SqlStore.from_url(sqlite_at_head(tmp_path / "refuse.db"))
    spool = Spool(tmp_path / "spool")
    queue = IngestQueue(store, linger_s=0, retry_delays_s=(0.0,), spool=spool)
    record = _gateway_span("k1", "0.25")
    with store.engine.begin() as conn:  # the database refuses every span write
        conn.execute(sa.text("ALTER TABLE spans RENAME TO spans_away"))
    assert queue.offer(PendingExport("p1", 1, records=[record], durable=span_records([record])))
    assert queue.wait_idle(10) and queue.stats.failed == 1
    queue.close()
    spool.close()
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE spans_away RENAME TO spans"))
    assert store.count_spans() == 0
    # the next start finds the record and stores it
    reopened = Spool(tmp_path / "spool")
    queue = IngestQueue(store, spool=reopened)
    report = replay_spool(reopened, queue, Settings())
    assert report.spans == 1 and store.count_spans() == 1
    queue.close()
    reopened.close()
    store.close()


def test_a_spool_that_cannot_be_written_answers_503_in_each_surfaces_shape(tmp_path: Path) -> None:
    store = SqlStore.from_url(sqlite_at_head(tmp_path / "fail.db"))
    _, secret = store.create_api_key("p1", "test", frozenset(DEFAULT_SCOPES))
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  - name: sim\n    provider: sim\n")
    settings = Settings(  # type: ignore[call-arg]
        home=tmp_path, durable=True, spool_dir=tmp_path / "spool", config=config
    )
    app = create_app(settings, store=store)
    (tmp_path / "spool" / f"{1:012d}.wal").mkdir()  # the first segment cannot be opened for writing
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {secret}"}
        spans = [otlp_span("step", llm_attributes(), duration_ms=5)]
        r = client.post(
            "/v1/traces",
            content=export_request(spans).SerializeToString(),
            headers={**auth, "Content-Type": "application/x-protobuf"},
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "spool_unavailable"
        chat = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        r = client.post("/v1/chat/completions", json=chat, headers=auth)  # fails closed from now on
        assert r.status_code == 503 and r.json()["error"]["code"] == "spool_unavailable"
        r = client.post("/v1/messages", json=chat, headers=auth)
        assert r.status_code == 503 and r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "overloaded_error"  # Anthropic's type for a 503
        r = client.post("/v1/chat/completions", json={**chat, "stream": True}, headers=auth)
        assert r.status_code == 200 and "spool_unavailable" in r.text and "[DONE]" not in r.text
        health = client.get("/health")
        assert health.status_code == 200  # the server itself keeps answering, and says what is wrong
        assert health.json()["status"] == "degraded"
        assert "durable spool unwritable" in health.json()["reasons"][0]
    store.close()
