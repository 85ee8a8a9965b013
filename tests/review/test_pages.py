"""The review pages in-process: a reviewer logs in with a user name and password, adds traces from the
trace list, reviews the next item (unsupported spans highlighted, the queue's configs as controls) and
their name is on the score; a wrong password is refused; an admin creates configs and queues."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pilothouse.domain.keys import DEFAULT_SCOPES, Scope
from pilothouse.quality.review import ReviewService
from tests.review.stored import write_trace
from tests.server.conftest import Served, serve


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


def _login(client: TestClient, **fields: str) -> int:
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token
    return client.post(
        "/login", data={"login_token": token.group(1), "next": "/review", **fields}, follow_redirects=False
    ).status_code


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


@pytest.mark.slow  # scrypt: each password check is deliberately slow
def test_a_reviewer_logs_in_and_reviews(served: Served) -> None:
    store, client = served.store, served.client
    service = ReviewService(store)
    trace = write_trace(store, "p1", "Capital of France?", "Lyon is the capital.")
    service.create_config("p1", "correct", "boolean", description="Is it right?")
    service.create_config("p1", "stars", "numeric", min_value=1, max_value=5)
    service.create_queue("p1", "triage", ["correct", "stars"])
    service.add_user("p1", "alice", "alice-password-1", "Alice")

    assert _login(client, username="alice", password="wrong-password-1", project="p1") == 401
    assert _login(client, username="alice", password="alice-password-1", project="p2") == 401
    assert _login(client, username="alice", password="alice-password-1", project="p1") == 303
    listing = client.get("/traces")
    assert listing.status_code == 200 and f'value="{trace}" form="review-add"' in listing.text
    added = client.post(
        "/review/add",
        data={
            "csrf": _csrf(listing.text),
            "queue": "triage",
            "mode": "selected",
            "trace": trace,
            "back": "/traces?",
        },
        follow_redirects=False,
    )
    assert added.status_code == 303 and "review_done=1%20trace%20added" in added.headers["location"]
    assert service.enqueue(trace, "triage", "dup", project_id="p1") is False

    screen = client.get("/review/queues/triage")
    assert screen.status_code == 200 and "picked from the trace list" in screen.text
    assert 'name="score:correct" value="true"' in screen.text and 'data-key="5"' in screen.text  # 1..5 stars
    assert "Paris is the capital of France." in screen.text  # the retrieval context
    item_id = re.search(r'action="/review/items/([0-9a-f]{32})"', screen.text)
    assert item_id
    refused = client.post(
        f"/review/items/{item_id.group(1)}", data={"csrf": _csrf(screen.text), "score:correct": "true"}
    )
    assert "stars: give an answer" in refused.text
    saved = client.post(
        f"/review/items/{item_id.group(1)}",
        data={
            "csrf": _csrf(screen.text),
            "score:correct": "false",
            "score:stars": "2",
            "corrected_output": "Paris.",
        },
    )
    assert saved.status_code == 200 and 'id="queue-empty"' in saved.text
    detail = store.get_trace("p1", trace)
    assert detail is not None
    assert {(s.name, s.comment) for s in detail.scores} == {
        ("correct", "review by alice"),
        ("stars", "review by alice"),
    }
    sent = client.post("/review/queues/triage/dataset", data={"csrf": _csrf(saved.text), "dataset": "fixes"})
    assert "fixes: new version 1, 1 items (1 corrected)." in sent.text
    forbidden = client.post(
        "/review/configs", data={"csrf": _csrf(saved.text), "name": "x", "kind": "boolean"}
    )
    assert forbidden.status_code == 403  # a reviewer is not an admin
    assert client.get("/review/agreement").status_code == 200


def test_spans_are_highlighted_and_admins_make_queues(served: Served) -> None:
    store, client = served.store, served.client
    _, admin = store.create_api_key("p1", "lead", frozenset({*DEFAULT_SCOPES, Scope.ADMIN}))
    trace = write_trace(store, "p1", "Capital of France?", "Lyon is the capital.")
    assert _login(client, key=admin) == 303
    home = client.get("/review")
    made = client.post(
        "/review/configs",
        data={"csrf": _csrf(home.text), "name": "tone", "kind": "categorical", "categories": "rude, kind"},
    )
    assert "Score config tone created." in made.text
    queued = client.post("/review/queues", data={"csrf": _csrf(home.text), "name": "q", "configs": "tone"})
    assert "Queue q created." in queued.text
    ReviewService(store).enqueue(
        trace, "q", "detector unsure", project_id="p1", spans=[(0, 4)], source="detector"
    )
    screen = client.get("/review/queues/q")
    assert (
        '<mark class="unsupported" title="not supported by the context">Lyon</mark> is the capital.'
        in screen.text
    )
    assert 'data-key="2"' in screen.text and "rude" in screen.text
