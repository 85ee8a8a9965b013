"""``/api/review`` in-process: configs and queues (admin), filling, leases between two keys, reviews
recorded under the key's name, agreement, calibration labels and the dataset of corrected outputs;
bad input is a JSON 4xx that says what is wrong."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pilothouse.domain.keys import DEFAULT_SCOPES, Scope
from tests.review.stored import write_trace
from tests.server.conftest import Served, serve


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_review_over_the_api(served: Served) -> None:
    store, http = served.store, served.client
    _, admin = store.create_api_key("p1", "lead", frozenset({*DEFAULT_SCOPES, Scope.ADMIN}))
    _, second = store.create_api_key("p1", "second", frozenset(DEFAULT_SCOPES))
    traces = [
        write_trace(store, "p1", f"Capital of France? {i}", "Lyon is the capital.", at=i) for i in range(3)
    ]

    assert (
        http.post(
            "/api/review/configs", json={"name": "correct", "kind": "boolean"}, headers=served.auth
        ).status_code
        == 403
    )
    made = http.post("/api/review/configs", json={"name": "correct", "kind": "boolean"}, headers=_auth(admin))
    assert made.status_code == 201 and made.json()["kind"] == "boolean"
    for body, message in [
        ({"name": "x", "kind": "stars"}, "Kind must be one of"),
        ({"name": "x", "kind": "numeric", "min_value": 5, "max_value": 1}, "min_value < max_value"),
        ({"name": "bad name!", "kind": "boolean"}, "1-100 letters"),
        ({"name": "x", "kind": "categorical", "categories": "a,b"}, "list of at most 20 strings"),
    ]:
        refused = http.post("/api/review/configs", json=body, headers=_auth(admin))
        assert refused.status_code == 400 and message in refused.json()["error"]["message"], refused.text
    assert http.post("/api/review/configs", content=b"{", headers=_auth(admin)).status_code == 400
    queue = {"name": "triage", "configs": ["correct"], "lease_seconds": 60}
    assert http.post("/api/review/queues", json=queue, headers=_auth(admin)).status_code == 201
    missing = http.post("/api/review/queues", json={"name": "q2", "configs": ["nope"]}, headers=_auth(admin))
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]

    body = {"trace_ids": [traces[0], "f" * 32], "reason": "odd answer", "unsupported_spans": [[0, 4]]}
    added = http.post("/api/review/queues/triage/items", json=body, headers=served.auth)
    assert added.json() == {"added": 1, "unknown_trace_ids": ["f" * 32]}
    filled = http.post(
        "/api/review/queues/triage/fill", json={"filters": {"name": "qa"}, "limit": 10}, headers=served.auth
    )
    assert filled.json() == {"added": 2}
    bad_filter = http.post(
        "/api/review/queues/triage/fill", json={"filters": {"colour": "red"}}, headers=served.auth
    )
    assert bad_filter.status_code == 400 and bad_filter.json()["error"]["param"] == "colour"
    other = http.post("/api/review/queues/triage/next", headers=_auth(served.other_key))
    assert other.status_code == 404  # another project has no such queue
    held_here = http.post("/api/review/queues/triage/next", headers=served.auth).json()["item"]
    for verb in ("release", "skip", "scores"):  # another project's item is unknown there, as docs say
        elsewhere = http.post(
            f"/api/review/items/{held_here['id']}/{verb}", json={}, headers=_auth(served.other_key)
        )
        assert elsewhere.status_code == 404, (verb, elsewhere.text)
    assert http.post("/api/review/items/nope/release", headers=served.auth).status_code == 404
    assert http.post(f"/api/review/items/{held_here['id']}/release", headers=served.auth).json() == {
        "released": True
    }

    mine = http.post("/api/review/queues/triage/next", headers=served.auth).json()["item"]
    theirs = http.post("/api/review/queues/triage/next", headers=_auth(second)).json()["item"]
    assert mine["id"] != theirs["id"] and mine["lease_owner"] == "key:test"
    assert mine["trace_id"] == traces[0] and mine["unsupported_spans"] == [[0, 4]]
    assert mine["output"] == "Lyon is the capital." and mine["context"] == ["Paris is the capital of France."]
    stolen = http.post(
        f"/api/review/items/{mine['id']}/scores", json={"scores": {"correct": True}}, headers=_auth(second)
    )
    assert (
        stolen.status_code == 400 and "Another reviewer (key:test) holds" in stolen.json()["error"]["message"]
    )
    wrong = http.post(
        f"/api/review/items/{mine['id']}/scores", json={"scores": {"correct": "maybe"}}, headers=served.auth
    )
    assert wrong.status_code == 400 and "true or false" in wrong.json()["error"]["message"]
    done = http.post(
        f"/api/review/items/{mine['id']}/scores",
        json={"scores": {"correct": False}, "corrected_output": "Paris is the capital."},
        headers=served.auth,
    )
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert done.json()["reviews_so_far"][0]["reviewer"] == "key:test"
    assert done.json()["reviews_so_far"][0]["scores"] == {"correct": False}  # a boolean, not "false"
    trace = http.get(f"/api/traces/{traces[0]}", headers=served.auth).json()
    assert any(s["name"] == "correct" and s["comment"] == "review by key:test" for s in trace["scores"])

    assert http.post(f"/api/review/items/{theirs['id']}/skip", headers=_auth(second)).json() == {
        "skipped": True
    }
    assert http.get("/api/review/items/nope", headers=served.auth).status_code == 404
    agreement = http.get("/api/review/configs/correct/agreement", headers=served.auth).json()
    assert agreement["config"] == "correct" and agreement["between_reviewers"]["n"] == 0
    labels = http.get("/api/review/configs/correct/labels", headers=served.auth)
    rows = [orjson.loads(line) for line in labels.text.splitlines()]
    assert labels.headers["content-type"].startswith("application/x-ndjson")
    assert rows == [
        {
            "id": traces[0],
            "input": {"input": "Capital of France? 0", "output": "Lyon is the capital.", "label": False},
            "expected": "Paris is the capital.",
        }
    ]
    sent = http.post(
        "/api/review/queues/triage/dataset", json={"dataset": "fixes"}, headers=served.auth
    ).json()
    assert sent == {"dataset": "fixes", "version": 1, "items": 1, "corrected": 1, "created": True}
    _, long_named = store.create_api_key("p1", "n" * 196, frozenset(DEFAULT_SCOPES))  # the longest
    held = http.post("/api/review/queues/triage/next", headers=_auth(long_named)).json()["item"]
    assert held["lease_owner"] == "key:" + "n" * 196  # whole: no two names are cut to one reviewer
    listed = http.get("/api/review/queues", headers=served.auth).json()["data"]
    assert listed[0]["items"] == {"pending": 2, "completed": 1}


def test_hostile_review_requests_get_clear_4xx(served: Served) -> None:
    store, http = served.store, served.client
    _, admin = store.create_api_key("p1", "lead", frozenset({*DEFAULT_SCOPES, Scope.ADMIN}))
    http.post("/api/review/configs", json={"name": "ok", "kind": "boolean"}, headers=_auth(admin))
    http.post("/api/review/queues", json={"name": "q", "configs": ["ok"]}, headers=_auth(admin))
    trace = write_trace(store, "p1", "q", "a")
    cases = [
        ("/api/review/queues/q/items", {"trace_ids": ["x"] * 1001}, "at most 1000 strings"),
        (
            "/api/review/queues/q/items",
            {"trace_ids": [trace], "unsupported_spans": [[5, 2]]},
            "0 <= start < end",
        ),
        (
            "/api/review/queues/q/items",
            {"trace_ids": [trace], "unsupported_spans": "0-4"},
            "[start, end] pairs",
        ),
        ("/api/review/queues/q/items", {"trace_ids": [trace], "reason": "x" * 501}, "at most 500 characters"),
        ("/api/review/queues/q/items", {"trace_ids": [trace], "source": "me"}, "Source must be one of"),
        ("/api/review/queues/q/fill", {"limit": 0}, "Limit is from 1 to 10000"),
        ("/api/review/queues/q/fill", {"filters": {"from": "yesterday-ish"}}, "from"),
        (
            "/api/review/queues",
            {"name": "q2", "configs": ["ok"], "lease_seconds": 1},
            "A lease (lease_seconds) is from 10",
        ),
        ("/api/review/queues", {"name": "q3", "configs": ["ok"], "reviews_per_item": True}, "whole number"),
        ("/api/review/queues/q/dataset", {"dataset": "d"}, "No reviewer of queue 'q' has written"),
        (  # answers of 1e308 made label means infinite
            "/api/review/configs",
            {"name": "huge", "kind": "numeric", "min_value": -1e308, "max_value": 1e308},
            "within -1e+12 to 1e+12",
        ),
    ]
    for path, body, message in cases:
        answer = http.post(path, json=body, headers=_auth(admin))
        assert answer.status_code == 400 and message in answer.json()["error"]["message"], (path, answer.text)
    listed = http.post("/api/review/queues/q/items", json=[1, 2], headers=_auth(admin))
    assert listed.status_code == 400 and "JSON object" in listed.json()["error"]["message"]
    assert http.post("/api/review/queues/" + "q" * 5000 + "/next", headers=_auth(admin)).status_code == 404
    assert http.get("/api/review/configs/nope/agreement", headers=_auth(admin)).status_code == 404
