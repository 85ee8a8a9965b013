"""The Langfuse SDK's first call in its own quickstart, ``auth_check()``, against Pilothouse: it passes
with a Pilothouse key (the ingest scope is all it needs) and fails with a refused one; Langfuse APIs
that Pilothouse does not serve answer a 404 that says what is served instead of a bare "Not found."."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pilothouse.domain.keys import Scope
from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer

pytestmark = pytest.mark.slow  # the Langfuse client starts its own exporter threads


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer(sqlite_at_head(tmp_path / "lf.db"), home=tmp_path) as running:
        yield running


def _langfuse(base_url: str, public: str, secret: str):  # type: ignore[no-untyped-def]
    from langfuse import Langfuse

    # one public key per client: the SDK keeps one set of resources (credentials included) per public key
    return Langfuse(public_key=public, secret_key=secret, base_url=base_url, tracing_enabled=False)


def test_auth_check_passes_with_a_pilothouse_key_and_fails_with_a_refused_one(
    server: InProcessServer,
) -> None:
    from langfuse.api import UnauthorizedError

    ingest_only = server.create_key("langfuse", scopes=frozenset({Scope.INGEST}))
    client = _langfuse(server.base_url, "pk-lf-good", ingest_only)
    try:
        assert client.auth_check() is True
        projects = client.api.projects.get()
        assert [p.id for p in projects.data] == ["default"]
    finally:
        client.shutdown()
    refused = _langfuse(server.base_url, "pk-lf-refused", "ph-not-a-key-of-this-server")
    try:
        with pytest.raises(UnauthorizedError):
            refused.auth_check()
    finally:
        refused.shutdown()


def test_a_langfuse_api_that_is_not_served_says_what_is(server: InProcessServer) -> None:
    key = server.create_key("langfuse")
    answer = httpx.get(f"{server.base_url}/api/public/v2/prompts/support", auth=("pk-lf-x", key))
    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert "POST /api/public/otel/v1/traces" in message and "GET /api/public/projects" in message
