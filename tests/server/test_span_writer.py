"""The SQLite span writer's two ends in one process (``serve --workers N`` runs them in several): a
worker's exports get 503 while the writer cannot be reached, and what it had accepted is stored once
the writer listens."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from starlette.testclient import TestClient

from pilothouse.domain.keys import DEFAULT_SCOPES
from pilothouse.server import Settings, create_app
from pilothouse.server.span_writer import SpanWriterServer, WriterAddress, WriterClient
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head
from tests.spans import export_request, llm_attributes, otlp_span

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _export(spans: int) -> bytes:
    return export_request([otlp_span("llm", llm_attributes()) for _ in range(spans)]).SerializeToString()


def test_exports_get_503_while_the_writer_is_away_and_what_was_accepted_is_stored_when_it_is_back(
    tmp_path: Path,
) -> None:
    url = sqlite_at_head(tmp_path / "writer.db")
    store = SqlStore.from_url(url)
    _, key = store.create_api_key("p1", "test", frozenset(DEFAULT_SCOPES))
    address = WriterAddress.make(tmp_path)
    sink = WriterClient(address, retry_s=0.02)
    headers = {**PROTOBUF, "Authorization": f"Bearer {key}"}
    app = create_app(Settings(home=tmp_path), store=store, span_sink=sink)
    with TestClient(app) as http:
        # accepted: that nothing listens yet is learnt when the batch writer first tries to send
        assert http.post("/v1/traces", content=_export(5), headers=headers).status_code == 200
        for _ in range(400):
            if sink.down is not None:
                break
            time.sleep(0.01)
        refused = http.post("/v1/traces", content=_export(7), headers=headers)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "writer_unavailable"
        assert refused.headers["Retry-After"] == "1"
        health = http.get("/health").json()
        assert health["status"] == "degraded" and health["span_writer"]["status"] != "ok"

        writer_store = SqlStore.from_url(url, migrate=False)  # the writer process's own connection
        writer = SpanWriterServer(writer_store, address)
        try:
            assert app.state.pilothouse.ingest.wait_idle(30)
            assert sink.down is None and http.get("/health").json()["span_writer"]["status"] == "ok"
            assert http.post("/v1/traces", content=_export(3), headers=headers).status_code == 200
            assert app.state.pilothouse.ingest.wait_idle(30)
        finally:
            writer.close()
            writer_store.close()
        assert writer.written == 8  # the first and the last export; the refused one was not queued
        listed = http.get("/api/traces?limit=100", headers={"Authorization": f"Bearer {key}"}).json()
        assert len(listed["data"]) == 8
    store.close()


def test_a_home_folder_too_deep_for_a_socket_path_gets_a_private_temporary_one(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    address = WriterAddress.make(deep)
    assert len(address.path.encode()) <= 100 and not address.path.startswith(str(deep))
    assert (Path(address.path).parent.stat().st_mode & 0o777) == 0o700  # the owner's only
    short = Path(tempfile.mkdtemp(prefix="sw-"))  # pytest's tmp_path can itself be too deep (long pids)
    try:
        assert WriterAddress.make(short).path.startswith(str(short))
    finally:
        shutil.rmtree(short)


def test_a_connection_that_never_proves_the_key_does_not_keep_the_workers_out(tmp_path: Path) -> None:
    """Listener.accept() with a key runs the handshake on the accepting thread: one local process that
    connects and stays silent (or sends garbage) would block every worker's (re)connection forever."""
    url = sqlite_at_head(tmp_path / "writer.db")
    store = SqlStore.from_url(url)
    address = WriterAddress.make(tmp_path)
    writer = SpanWriterServer(store, address)
    silent, garbage = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    sink = WriterClient(address, retry_s=0.02)
    try:
        silent.connect(address.path)  # and never answers the challenge
        garbage.connect(address.path)
        garbage.sendall(b"\xff" * 64)
        sent = threading.Thread(target=sink.write_span_chunks, args=([[]],), daemon=True)
        sent.start()
        sent.join(30)
        assert not sent.is_alive(), "the worker could not reach the writer"
        assert sink.pid == os.getpid()
    finally:
        sink.close()
        silent.close()
        garbage.close()
        writer.close()
        store.close()


def test_another_servers_writer_on_the_path_is_a_writer_down_not_a_crash(tmp_path: Path) -> None:
    """Two servers must never share a socket name (a container's server is often pid 1 each time), and a
    writer that refuses this worker's key is reported as down, the chunks kept for the right one."""
    first, second = WriterAddress.make(tmp_path), WriterAddress.make(tmp_path)
    assert first.path != second.path  # same process, same pid: the names still differ
    url = sqlite_at_head(tmp_path / "writer.db")
    store = SqlStore.from_url(url)
    stranger = WriterAddress(first.path, os.urandom(32))  # another server's writer on our path
    writer = SpanWriterServer(store, stranger)
    sink = WriterClient(first, retry_s=0.02)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sink.write_span_chunks([[]])
        except ConnectionError:
            pass  # closed by the test
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    try:
        for _ in range(500):
            if sink.down is not None or errors:
                break
            time.sleep(0.01)
        assert errors == [] and sink.down is not None
    finally:
        sink.close()
        thread.join(10)
        writer.close()
        store.close()
