"""The attacker's pass: a NUL character (U+0000) in anything a client sends. PostgreSQL's text
columns cannot hold one, so a single gateway request or span carrying one used to fail the batch it
was written in, with every other tenant's spans of that batch, after the writer's retries (SQLite
stored it). Every text the store writes is now kept with U+FFFD in its place, on both databases.
Over the app's real HTTP surface (TestClient), a real SQLite file and the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import _clean
from tests.server.conftest import Served, serve
from tests.spans import export_request, otlp_span

PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    config = tmp_path / "models.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "sim", "provider": "sim"}]}))
    url = None
    if request.param == "postgresql":
        from pilothouse.store.sql import SqlStore

        url = request.getfixturevalue("pg_server")
        store = SqlStore.from_url(url)
        _clean(store)
        store.close()
    yield from serve(tmp_path, url, config=config)


def _stats(served: Served) -> Any:
    served.drain()
    return served.client.app.state.pilothouse.ingest.stats  # type: ignore[attr-defined]


def _observations(served: Served, auth: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for t in served.client.get("/api/traces", headers=auth).json()["data"]:
        out += served.client.get(f"/api/traces/{t['id']}", headers=auth).json()["observations"]
    return out


@pytest.mark.slow  # the writer's batches on the real PostgreSQL: about a second
def test_a_nul_in_a_gateway_request_is_stored_and_spoils_no_other_tenants_batch(served: Served) -> None:
    nul = "a\x00b"
    chat = {"model": "sim", "messages": [{"role": "user", "content": nul}], "user": nul}
    r = served.client.post(
        "/v1/chat/completions", json=chat, headers={**served.auth, "x-pilothouse-tags": "t\x00x"}
    )
    assert r.status_code == 200, r.text
    refused = {"model": "sim", "input": "hi", "previous_response_id": nul}  # its message quotes the id
    assert served.client.post("/v1/responses", json=refused, headers=served.auth).status_code == 400
    other = {**PROTOBUF, "Authorization": f"Bearer {served.other_key}"}
    span = otlp_span("other tenant", {"input.value": "fine"})
    assert served.client.post("/v1/traces", content=export_request([span]).SerializeToString(), headers=other)
    assert _stats(served).failed == 0
    mine = _observations(served, served.auth)
    assert len(mine) == 2  # the call and the refusal, both stored
    (call,) = [o for o in mine if o["status"] == "ok"]
    assert call["input"] == [{"role": "user", "content": nul}]  # JSON text: the NUL escaped, kept
    (refusal,) = [o for o in mine if o["status"] == "error"]
    assert "\x00" not in refusal["status_message"] and "\ufffd" in refusal["status_message"]
    theirs = _observations(served, {"Authorization": f"Bearer {served.other_key}"})
    assert [o["name"] for o in theirs] == ["other tenant"]


@pytest.mark.slow
def test_a_nul_in_an_otlp_span_is_stored_replaced(served: Served) -> None:
    span = otlp_span("na\x00me", {"input.value": "in\x00put", "session.id": "s\x00", "user.id": "u\x00"})
    span.status.message = "bad\x00"
    body = export_request([span], resource={"service.name": "svc\x00"}).SerializeToString()
    r = served.client.post("/v1/traces", content=body, headers={**PROTOBUF, **served.auth})
    assert r.status_code == 200, r.text
    assert _stats(served).failed == 0
    (stored,) = _observations(served, served.auth)
    assert stored["name"] == "na\ufffdme"


@pytest.mark.slow
def test_a_nul_in_a_score_or_a_filter_is_no_500(served: Served) -> None:
    span = otlp_span("scored", {"k": "v"})
    body = export_request([span]).SerializeToString()
    assert (
        served.client.post("/v1/traces", content=body, headers={**PROTOBUF, **served.auth}).status_code == 200
    )
    served.drain()
    score = {"trace_id": span.trace_id.hex(), "name": "q\x00", "value": 1, "comment": "c\x00"}
    r = served.client.post("/api/scores", json=score, headers=served.auth)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_score", r.text  # a name: refused
    r = served.client.post("/api/scores", json={**score, "name": "q"}, headers=served.auth)
    assert r.status_code == 201, r.text  # free text: stored with the NUL replaced
    for query in ("user_id=a%00b", "session_id=a%00b", "name=a%00b"):
        r = served.client.get(f"/api/traces?{query}", headers=served.auth)
        assert r.status_code == 200 and r.json()["data"] == [], (query, r.text)
