"""The prompt pages, in-process: list, create, view, edit as a new version, move a label, diff, and
the history; a read-only key sees them but cannot change anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pilothouse.domain.keys import Scope
from tests.server.conftest import Served, serve
from tests.ui.conftest import csrf_of, login


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


@pytest.mark.slow  # two logins and a dozen pages
def test_prompt_pages(app: Served) -> None:
    _, admin_key = app.store.create_api_key("p1", "editor", frozenset({Scope.ADMIN, Scope.READ}))
    client = app.client
    client.follow_redirects = False
    assert login(client, admin_key).status_code == 303
    listing = client.get("/prompts")
    assert (
        listing.status_code == 200 and "No prompts yet" in listing.text and 'href="/prompts"' in listing.text
    )
    csrf = csrf_of(listing.text)
    bad = client.post("/prompts", data={"csrf": csrf, "name": "greet", "type": "chat", "prompt": "[not json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    created = client.post(
        "/prompts",
        data={
            "csrf": csrf,
            "name": "greet",
            "type": "text",
            "prompt": "Hello {{who}}",
            "model": "sim",
            "labels": "production",
        },
    )
    assert created.status_code == 303 and created.headers["location"] == "/prompts/greet?done=created"
    edited = client.post(
        "/prompts/greet/versions",
        data={
            "csrf": csrf,
            "type": "text",
            "prompt": "Hi there {{who}}",
            "parameters": '{"temperature": 0}',
            "message": "friendlier",
        },
    )
    assert edited.status_code == 303
    page = client.get("/prompts/greet")
    assert "Prompt greet" in page.text and "Hi there {{who}}" in page.text and "friendlier" in page.text
    app.client.app.state.pilothouse.prompts.set_canary("p1", "greet", "production", 2, 0.2, actor=None)  # type: ignore[attr-defined]
    assert "Canary: 20.0% of <strong>production</strong> traffic" in client.get("/prompts/greet").text
    # moving the label where it points changes nothing, says so, and the canary goes on
    same = client.post("/prompts/greet/labels", data={"csrf": csrf, "label": "production", "version": "1"})
    assert same.status_code == 303 and same.headers["location"] == "/prompts/greet?done=unchanged"
    page = client.get("/prompts/greet?done=unchanged").text
    assert "already points at that version: nothing changed" in page and "Canary: 20.0%" in page
    moved = client.post("/prompts/greet/labels", data={"csrf": csrf, "label": "production", "version": "2"})
    assert moved.status_code == 303
    diff = client.get("/prompts/greet/diff?from=1&to=2")
    assert "<del>-Hello {{who}}</del>" in diff.text and "<ins>+Hi there {{who}}</ins>" in diff.text
    history = client.get("/prompts/greet").text
    assert "production → v2" in history and "(was v1)" in history
    assert '<td class="small">key:editor</td>' in history  # who, as the API records the same key
    assert "v1" in client.get("/prompts/greet?version=1").text
    assert client.get("/prompts/nope").status_code == 404
    assert client.get("/prompts/greet?version=abc").status_code == 400
    # a read-only key sees the pages, without the forms, and cannot post
    client.cookies.clear()
    assert login(client, app.key).status_code == 303
    read_only = client.get("/prompts/greet")
    assert read_only.status_code == 200 and "Move a label" not in read_only.text
    refused = client.post(
        "/prompts/greet/labels",
        data={"csrf": csrf_of(client.get("/traces").text), "label": "production", "version": "1"},
    )
    assert refused.status_code == 403
