"""``pilothouse.flush()`` says whether the server took the traces: a new user who forgot to export the
key, or pointed the SDK at the wrong port, learns it from the return value and one log line, instead of
a True over traces that never arrived."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import pilothouse
from pilothouse.testing import free_port
from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer(sqlite_at_head(tmp_path / "sdk.db"), home=tmp_path) as running:
        yield running


def _trace_one(name: str) -> str:
    with pilothouse.span(name) as span:
        pilothouse.score("helpful", True)
        return format(span.span.get_span_context().trace_id, "032x")


def test_flush_is_true_when_the_server_stored_the_trace(server: InProcessServer) -> None:
    key = server.create_key()
    pilothouse.init(base_url=server.base_url, api_key=key, set_global=False)
    try:
        trace_id = _trace_one("accepted")
        assert pilothouse.flush() is True
    finally:
        pilothouse.shutdown()
    assert server.store.get_trace("default", trace_id) is not None


def test_flush_is_false_and_says_why_when_the_key_is_refused(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    pilothouse.init(base_url=server.base_url, api_key="ph-not-a-key-of-this-server", set_global=False)
    try:
        with caplog.at_level(logging.WARNING, logger="pilothouse.sdk"):
            _trace_one("refused")
            assert pilothouse.flush() is False
            assert pilothouse.flush() is True  # nothing pending, nothing failed since
    finally:
        pilothouse.shutdown()
    told = [r.getMessage() for r in caplog.records if r.name == "pilothouse.sdk"]
    assert any("not accepted by " + server.base_url in m and "PILOTHOUSE_API_KEY" in m for m in told), told


@pytest.mark.slow  # the OTLP exporter retries with backoff for seconds before it gives up
def test_flush_is_false_when_no_server_listens(caplog: pytest.LogCaptureFixture) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    pilothouse.init(base_url=nowhere, api_key="ph-anything", set_global=False)
    try:
        with caplog.at_level(logging.WARNING, logger="pilothouse.sdk"):
            with pilothouse.span("lost"):
                pass
            assert pilothouse.flush(timeout_s=2) is False
    finally:
        pilothouse.shutdown()
    assert any("not accepted by " + nowhere in r.getMessage() for r in caplog.records)


def test_init_without_a_key_warns(
    server: InProcessServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PILOTHOUSE_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="pilothouse.sdk"):
        pilothouse.init(base_url=server.base_url, set_global=False)
    try:
        assert any("no API key" in r.getMessage() for r in caplog.records)
    finally:
        pilothouse.shutdown()
