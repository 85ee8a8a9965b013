"""The attacker's pass on authentication headers: HTTP Basic credentials (the Langfuse SDK's way, on
every authenticated route) that are not ASCII or not base64 are a 401 in the surface's shape, never a
500. Over the app's real HTTP surface (TestClient) and a real SQLite store."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Served, serve

PROTOBUF = {"Content-Type": "application/x-protobuf"}
LANGFUSE = "/api/public/otel/v1/traces"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


@pytest.mark.parametrize(
    "credentials",
    [b"Basic \xff\xfe", "Basic ünïcode".encode(), b"Basic !!!!", b"Basic " + base64.b64encode(b"\xff:\xfe")],
    ids=["latin-1 bytes", "utf-8 text", "not base64", "not utf-8 inside"],
)
@pytest.mark.parametrize("path", [LANGFUSE, "/v1/traces", "/api/traces"])
def test_unreadable_basic_credentials_are_a_401(served: Served, credentials: bytes, path: str) -> None:
    headers = {"Authorization": credentials, **PROTOBUF}
    if path == "/api/traces":
        r = served.client.get(path, headers=headers)
    else:
        r = served.client.post(path, content=b"", headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_basic_credentials_carrying_a_key_still_work(served: Served) -> None:
    basic = base64.b64encode(f"pk-lf-public:{served.key}".encode()).decode()
    r = served.client.post(LANGFUSE, content=b"", headers={"Authorization": f"Basic {basic}", **PROTOBUF})
    assert r.status_code == 200, r.text
