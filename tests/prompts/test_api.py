"""``/api/prompts`` and prompt references in ``/v1/chat/completions``, on the app served in-process:
the rendered request reaches the model, the call's span records the prompt's name and version, and a
label move is seen by the next request of the same process at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pilothouse.domain.keys import Scope
from pilothouse.domain.queries import TraceQuery
from pilothouse.store.evals import EvalStore
from tests.server.conftest import Served, serve

MODELS = [
    {
        "name": "echo",
        "provider": "sim",
        "model": "echo-1",
        "options": {"echo": True},
        "price": {"input": 0, "output": 0},
    },
    {
        "name": "other",
        "provider": "sim",
        "model": "other-1",
        "options": {"echo": True},
        "price": {"input": 0, "output": 0},
    },
]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Served]:
    config = tmp_path / "prompts.yaml"
    config.write_text(yaml.safe_dump({"models": MODELS}))
    yield from serve(tmp_path, config=config)


def _admin(app: Served) -> dict[str, str]:
    _, key = app.store.create_api_key("p1", "editor", frozenset({Scope.ADMIN, Scope.READ, Scope.GATEWAY}))
    return {"Authorization": f"Bearer {key}"}


def test_create_read_label_diff_history(app: Served) -> None:
    admin = _admin(app)
    body = {
        "prompt": [{"role": "user", "content": "Say {{word}}"}],
        "model": "echo",
        "labels": ["production"],
    }
    created = app.client.post("/api/prompts/greet/versions", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["variables"] == ["word"]
    second = {"prompt": [{"role": "user", "content": "Please say {{word}}"}], "model": "echo"}
    assert app.client.post("/api/prompts/greet/versions", json=second, headers=admin).json()["version"] == 2
    # a read-only key reads but cannot change
    assert app.client.get("/api/prompts/greet", headers=app.auth).json()["version"] == 1
    assert app.client.get("/api/prompts/greet?label=latest", headers=app.auth).json()["version"] == 2
    refused = app.client.post(
        "/api/prompts/greet/labels", json={"label": "production", "version": 2}, headers=app.auth
    )
    assert refused.status_code == 403
    moved = app.client.post(
        "/api/prompts/greet/labels", json={"label": "production", "version": 2}, headers=admin
    )
    assert moved.json() == {
        "name": "greet",
        "label": "production",
        "version": 2,
        "previous_version": 1,
        "changed": True,
    }
    diff = app.client.get("/api/prompts/greet/diff?from=1&to=2", headers=app.auth).json()["diff"]
    assert "-Say {{word}}" in diff and "+Please say {{word}}" in diff
    history = app.client.get("/api/prompts/greet/history", headers=app.auth).json()["data"]
    assert [e["action"] for e in history] == ["label", "create", "label", "create"]
    assert history[0]["actor"] == "key:editor"
    listed = app.client.get("/api/prompts", headers=app.auth).json()["data"]
    assert listed == [
        {
            "name": "greet",
            "latest_version": 2,
            "labels": {"production": 2},
            "updated_ns": listed[0]["updated_ns"],
            "type": "chat",
        }
    ]
    # another project sees nothing
    assert (
        app.client.get("/api/prompts/greet", headers={"Authorization": f"Bearer {app.other_key}"}).status_code
        == 404
    )


BAD_CHANGES = [
    ("/api/prompts/greet/versions", {"prompt": 42}, 400),
    ("/api/prompts/greet/versions", ["not", "an", "object"], 400),
    ("/api/prompts/-bad/versions", {"prompt": "x"}, 400),
    ("/api/prompts/greet/labels", {"label": "production", "version": 99}, 404),
    ("/api/prompts/greet/labels", {"label": "latest", "version": 1}, 400),
    ("/api/prompts/greet/labels", {"label": "production", "version": "1"}, 400),
]
BAD_REFERENCES = [
    ({"name": "nope"}, 404, "no label"),
    ({"name": "greet", "version": 7}, 404, "no version 7"),
    ({"name": "greet", "variables": {}}, 400, "'word' is not defined"),
    ({"name": "greet", "label": "x", "version": 1}, 400, "not both"),
    ({"name": "greet", "colour": "red"}, 400, "unknown field"),
    ("greet", 400, "must be an object"),
]


def test_bad_changes_and_references_are_clear_errors(app: Served) -> None:
    admin = _admin(app)
    version = {"prompt": "Say {{word}}", "model": "echo", "labels": ["production"]}
    app.client.post("/api/prompts/greet/versions", json=version, headers=admin)
    for path, body, status in BAD_CHANGES:
        response = app.client.post(path, json=body, headers=admin)
        assert response.status_code == status, (path, body, response.text)
        assert response.json()["error"]["message"]
    # a variable used many times must not fill memory: refused before the template is filled in
    many = "".join("{{word}}" for _ in range(2000))
    app.client.post(
        "/api/prompts/wide/versions",
        json={"prompt": many, "model": "echo", "labels": ["production"]},
        headers=admin,
    )
    huge = {"name": "wide", "variables": {"word": "x" * 100_000}}
    cases = [*BAD_REFERENCES, (huge, 400, "at most 8,388,608")]
    for prompt, status, words in cases:  # in OpenAI's error shape
        response = app.client.post("/v1/chat/completions", json={"prompt": prompt}, headers=admin)
        assert response.status_code == status, (prompt, response.text)
        assert words in response.json()["error"]["message"]


@pytest.mark.slow  # three model calls and the ingest of their spans
def test_gateway_renders_a_reference_and_traces_its_version(app: Served) -> None:
    admin = _admin(app)
    template = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Repeat {{word}} please"},
        ],
        "model": "echo",
        "parameters": {"max_tokens": 8},
        "labels": ["production"],
    }
    app.client.post("/api/prompts/greet/versions", json=template, headers=admin)
    ref = {"prompt": {"name": "greet", "variables": {"word": "tides"}}}
    first = app.client.post("/v1/chat/completions", json=ref, headers=admin)
    assert first.status_code == 200, first.text
    assert first.json()["choices"][0]["message"]["content"] == "Repeat tides please"
    # the request's own messages follow the prompt's; its own model wins over the prompt's
    own = {**ref, "model": "other", "messages": [{"role": "user", "content": "and more"}]}
    second = app.client.post("/v1/chat/completions", json=own, headers=admin)
    assert second.json()["choices"][0]["message"]["content"] == "and more"
    assert second.json()["model"] == "other-1"
    # a label move is seen by the very next request of this process
    app.client.post(
        "/api/prompts/greet/versions",
        json={**template, "prompt": "Now {{word}}", "labels": []},
        headers=admin,
    )
    app.client.post("/api/prompts/greet/labels", json={"label": "production", "version": 2}, headers=admin)
    third = app.client.post("/v1/chat/completions", json=ref, headers=admin)
    assert third.json()["choices"][0]["message"]["content"] == "Now tides"
    app.drain()
    traces = app.client.get("/api/traces", headers=admin).json()["data"]
    observations = [
        o
        for t in traces
        for o in app.client.get(f"/api/traces/{t['id']}", headers=admin).json()["observations"]
    ]
    assert sorted(o["prompt"]["version"] for o in observations) == ["1", "1", "2"]
    assert {o["prompt"]["name"] for o in observations} == {"greet"}


def test_curated_items_keep_the_variables_of_a_prompt_reference(app: Served) -> None:
    """A gateway call made from a registry prompt records its variables, so that an item curated from
    its trace holds both the chat that was sent and the variables (replayable through a new version)."""
    admin = _admin(app)
    template = {
        "prompt": [{"role": "user", "content": "Repeat {{word}}"}],
        "model": "echo",
        "labels": ["production"],
    }
    app.client.post("/api/prompts/greet/versions", json=template, headers=admin)
    ref = {"prompt": {"name": "greet", "variables": {"word": "tides"}}}
    assert app.client.post("/v1/chat/completions", json=ref, headers=admin).status_code == 200
    plain = {"model": "echo", "messages": [{"role": "user", "content": "Repeat moon"}]}
    assert app.client.post("/v1/chat/completions", json=plain, headers=admin).status_code == 200
    app.drain()
    items = list(EvalStore(app.store).iter_trace_items("p1", TraceQuery()))
    by_answer = {item.expected: item for item in items}
    referenced, direct = by_answer["Repeat tides"], by_answer["Repeat moon"]
    assert referenced.input == {"word": "tides"}
    assert referenced.messages == ({"role": "user", "content": "Repeat tides"},)
    assert direct.input == {} and direct.messages == ({"role": "user", "content": "Repeat moon"},)
    # the same through the ids of the traces
    again = EvalStore(app.store).trace_items("p1", [referenced.id])
    assert again[referenced.id].input == {"word": "tides"}


@pytest.mark.slow  # two dozen model calls
def test_a_canary_sends_a_share_of_users_to_another_version(app: Served) -> None:
    admin = _admin(app)
    for text in ("Old {{word}}", "New {{word}}"):
        body = {"prompt": text, "model": "echo", "labels": ["production"] if text.startswith("Old") else []}
        app.client.post("/api/prompts/greet/versions", json=body, headers=admin)
    bad = app.client.post("/api/prompts/greet/canary", json={"version": 2, "share": 2}, headers=admin)
    assert bad.status_code == 400 and "between 0 and 1" in bad.json()["error"]["message"]
    started = app.client.post("/api/prompts/greet/canary", json={"version": 2, "share": 0.5}, headers=admin)
    assert started.json() == {
        "name": "greet",
        "label": "production",
        "version": 1,
        "canary_version": 2,
        "share": 0.5,
    }
    answers = {}
    for n in range(24):
        user = {"x-pilothouse-user": f"user-{n}"}
        body = {"prompt": {"name": "greet", "variables": {"word": "hi"}}}
        answer = app.client.post("/v1/chat/completions", json=body, headers={**admin, **user})
        answers[n] = answer.json()["choices"][0]["message"]["content"]
    assert set(answers.values()) == {"Old hi", "New hi"}  # both arms served
    again = app.client.post(
        "/v1/chat/completions",
        json={"prompt": {"name": "greet", "variables": {"word": "hi"}}},
        headers={**admin, "x-pilothouse-user": "user-3"},
    )
    assert again.json()["choices"][0]["message"]["content"] == answers[3]  # sticky
    # pointing the label where it points already changes nothing: no history entry, the canary goes on
    same = app.client.post(
        "/api/prompts/greet/labels", json={"label": "production", "version": 1}, headers=admin
    )
    assert same.json()["changed"] is False and same.json()["previous_version"] == 1
    canary = app.client.get("/api/prompts/greet/canary", headers=admin).json()
    assert canary["canary_version"] == 2, canary
    history = app.client.get("/api/prompts/greet/history", headers=admin).json()["data"]
    assert [(e["action"], e["version"]) for e in history[:1]] == [("canary", 2)]
    stopped = app.client.post("/api/prompts/greet/canary", json={"version": None}, headers=admin)
    assert stopped.status_code == 200
    history = app.client.get("/api/prompts/greet/history", headers=admin).json()["data"]
    assert [(e["action"], e["version"]) for e in history[:2]] == [("canary", None), ("canary", 2)]


BAD_VERSIONS = [
    ({"parameters": {"max_tokens": -5}}, "'max_tokens' must be an integer from 1"),
    ({"parameters": {"temperature": "hot"}}, "'temperature' must be a number from 0 to 2"),
    ({"parameters": {"bogus_param": 1}}, "Unrecognized request argument supplied: bogus_param"),
    ({"model": "echo\x00"}, "no control characters"),
]


def test_versions_are_checked_by_the_gateway_rules_when_stored(app: Served) -> None:
    admin = _admin(app)
    for extra, words in BAD_VERSIONS:
        body = {"prompt": "Say {{word}}", **extra}
        response = app.client.post("/api/prompts/greet/versions", json=body, headers=admin)
        assert response.status_code == 400, (extra, response.text)
        assert words in response.json()["error"]["message"], response.text
    assert app.client.get("/api/prompts/greet/versions", headers=admin).status_code == 404  # none stored
    body = {"prompt": "Say {{word}}", "model": "echo", "message": "fix\x00", "labels": ["production"]}
    created = app.client.post("/api/prompts/greet/versions", json=body, headers=admin)
    assert created.status_code == 201 and created.json()["message"] == "fix\ufffd", created.text
    # a canary: a share too small to decide, and stopping one that does not run, are refused
    app.client.post("/api/prompts/greet/versions", json={**body, "labels": []}, headers=admin)
    tiny = app.client.post("/api/prompts/greet/canary", json={"version": 2, "share": 1e-300}, headers=admin)
    assert tiny.status_code == 400 and "at least 0.001" in tiny.json()["error"]["message"]
    stop = app.client.post("/api/prompts/greet/canary", json={"version": None}, headers=admin)
    assert stop.status_code == 400 and "no canary is running" in stop.json()["error"]["message"]
    history = app.client.get("/api/prompts/greet/history", headers=admin).json()["data"]
    assert [e["action"] for e in history] == ["create", "label", "create"]
    # history: an unknown prompt is a 404 (as /versions), a bad limit names its range
    assert app.client.get("/api/prompts/nosuch/history", headers=admin).status_code == 404
    bad = app.client.get("/api/prompts/greet/history?limit=-1", headers=admin)
    assert bad.status_code == 400 and "from 1 to 1000" in bad.json()["error"]["message"]
    # score names with control characters are refused (an ESC rewrites a terminal that shows it)
    for name in ("bad\x1b[2J", "nul\x00"):
        score = {"trace_id": "a" * 32, "name": name, "value": 1}
        refused = app.client.post("/api/scores", json=score, headers=app.auth)
        assert refused.status_code == 400 and "control characters" in refused.json()["error"]["message"]
