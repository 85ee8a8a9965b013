"""A request that needs the database while it cannot be reached (PostgreSQL restarting, its
connections ended: docs/deploy.md) gets a 503 ``database_unavailable`` with ``Retry-After``, not a 500,
and the server answers again once the database is back."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from tests.conftest import PG_ADMIN_URL
from tests.server.inprocess import InProcessServer

pytestmark = pytest.mark.slow  # a new PostgreSQL database and a server


def _connections(url: str, allowed: bool) -> None:
    """Let new connections into the database at ``url`` or not (ending those it has)."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )


def test_a_call_while_the_database_is_down_gets_a_503(tmp_path: Path, empty_pg_url: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "sim", "provider": "sim", "model": "sim"}]}))
    with InProcessServer(empty_pg_url, home=tmp_path, config=config) as server:
        secret = server.create_key()  # not yet looked up: its first call reads the database
        call = {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {secret}"}
        _connections(empty_pg_url, allowed=False)
        try:
            down = httpx.post(f"{server.base_url}/v1/chat/completions", json=call, headers=headers)
        finally:
            _connections(empty_pg_url, allowed=True)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "database_unavailable"
        assert down.headers["retry-after"] == "1"
        back = httpx.post(f"{server.base_url}/v1/chat/completions", json=call, headers=headers)
        assert back.status_code == 200, back.text


def test_the_anthropic_surface_gets_its_503_in_anthropics_shape(tmp_path: Path, empty_pg_url: str) -> None:
    """/v1/messages answers in Anthropic's error shape, the database's 503 included (an Anthropic SDK
    reads error.type and error.message, not OpenAI's code)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "sim", "provider": "sim", "model": "sim"}]}))
    with InProcessServer(empty_pg_url, home=tmp_path, config=config) as server:
        secret = server.create_key()  # not yet looked up: its first call reads the database
        call = {"model": "sim", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-api-key": secret, "anthropic-version": "2023-06-01"}
        _connections(empty_pg_url, allowed=False)
        try:
            down = httpx.post(f"{server.base_url}/v1/messages", json=call, headers=headers)
            count = httpx.post(f"{server.base_url}/v1/messages/count_tokens", json=call, headers=headers)
        finally:
            _connections(empty_pg_url, allowed=True)
        for answer in (down, count):
            assert answer.status_code == 503, answer.text
            assert answer.json() == {
                "type": "error",
                "error": {
                    "type": "overloaded_error",
                    "message": "The database of this server cannot be reached; retry shortly.",
                },
            }
            assert answer.headers["retry-after"] == "1"
        back = httpx.post(f"{server.base_url}/v1/messages", json=call, headers=headers)
        assert back.status_code == 200, back.text
        assert back.json()["type"] == "message"
