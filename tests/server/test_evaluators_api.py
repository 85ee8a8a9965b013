"""``/api/evaluators`` in-process: create, read, edit (versions), pause, delete and backfill, the
refusals (scopes, projects, bad rules), and the app's own worker scoring a live trace, with its
watchdog in ``/health``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilothouse.domain.keys import DEFAULT_SCOPES, Scope
from pilothouse.domain.traces import ScoreSource
from tests.quality.online_traces import store_trace
from tests.server.conftest import Served, serve

pytestmark = pytest.mark.slow  # a served app whose worker is waited for

PARIS = {"name": "paris", "scorer": {"type": "contains", "value": "Paris"}, "sampling": 1.0}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path, online_evals_poll_s=0.02, online_evals_settle_s=0.0)


def admin(served: Served) -> dict[str, str]:
    _, key = served.store.create_api_key("p1", "admin", frozenset({*DEFAULT_SCOPES, Scope.ADMIN}))
    return {"Authorization": f"Bearer {key}"}


def wait_for_scores(served: Served, trace_id: str, project: str = "p1") -> list[object]:
    for _ in range(500):  # bounded: the worker polls every 20 ms
        detail = served.store.get_trace(project, trace_id)
        assert detail is not None
        online = [s for s in detail.scores if s.source is ScoreSource.ONLINE]
        if online:
            return online
        time.sleep(0.02)
    raise AssertionError("the worker did not score the trace")


def test_crud_versions_and_the_worker_scoring_live_traces(served: Served) -> None:
    headers = admin(served)
    client = served.client
    created = client.post("/api/evaluators", json=PARIS, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json() | {"id": "", "created_ns": 0, "updated_ns": 0} == {
        "id": "",
        "name": "paris",
        "version": 1,
        "enabled": True,
        "filters": {},
        "sampling": 1.0,
        "scorer": {"type": "contains", "value": "Paris"},
        "context": "metadata.context",
        "counts": {},
        "counts_all_versions": {},
        "cost_today_usd": 0.0,
        "created_ns": 0,
        "updated_ns": 0,
    }
    assert client.post("/api/evaluators", json=PARIS, headers=headers).status_code == 409

    trace = store_trace(served.store, project="p1")
    (score,) = wait_for_scores(served, trace)
    assert (score.name, score.value, score.comment) == ("paris", 1.0, "paris v1")  # type: ignore[attr-defined]

    one = client.get("/api/evaluators/paris", headers=served.auth).json()
    assert one["counts"] == {"scored": 1} and one["items"][0]["trace_id"] == trace
    listed = client.get("/api/evaluators", headers=served.auth).json()
    assert [e["name"] for e in listed["data"]] == ["paris"]
    assert listed["worker"]["stalled"] is False and listed["worker"]["scored"] == 1
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["online_evals"]["backlog"] == 0

    edit = {"scorer": {"type": "contains", "value": "Lyon"}, "sampling": 1.0}
    edited = client.put("/api/evaluators/paris", json=edit, headers=headers).json()
    assert (
        edited["version"] == 2 and edited["counts"] == {} and edited["counts_all_versions"] == {"scored": 1}
    )
    paused = client.put("/api/evaluators/paris", json={"enabled": False}, headers=headers).json()
    assert paused["enabled"] is False and paused["version"] == 2

    backfilled = client.post("/api/evaluators/paris/backfill", json={"start": "1h"}, headers=headers)
    assert backfilled.status_code == 202 and backfilled.json() == {
        "traces": 1,
        "queued": 1,
        "truncated": False,
    }
    scores = []
    for _ in range(500):
        scores = sorted(s.comment for s in served.store.get_trace("p1", trace).scores)  # type: ignore[union-attr, type-var]
        if len(scores) == 2:
            break
        time.sleep(0.02)
    assert scores == ["paris v1", "paris v2: missing ['Lyon']"]  # a paused evaluator backfills all the same

    assert client.delete("/api/evaluators/paris", headers=headers).json() == {"deleted": "paris"}
    assert client.get("/api/evaluators/paris", headers=served.auth).status_code == 404
    assert len(served.store.get_trace("p1", trace).scores) == 2  # type: ignore[union-attr]  # scores stay


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({**PARIS, "name": "bad name!"}, 400, "'name' must be 1-100 letters"),
        ({**PARIS, "sampling": 2}, 400, "'sampling' must be between 0 and 1"),
        ({**PARIS, "scorer": {"type": "no-such"}}, 400, "unknown scorer type 'no-such'"),
        ({**PARIS, "scorer": {"type": "contains", "colour": 1}}, 400, "unknown option(s) colour"),
        ({**PARIS, "scorer": {"type": "rubric", "criteria": "x"}}, 400, "set 'judge'"),
        (
            {**PARIS, "scorer": {"type": "rubric", "criteria": "x"}, "judge": "gpt-9"},
            400,
            "'gpt-9' is not served",
        ),
        ({**PARIS, "enabled": "yes"}, 400, "'enabled' must be true or false"),
        ([PARIS], 400, "must be a JSON object"),
    ],
)
def test_bad_evaluators_get_a_clear_400(served: Served, body: object, status: int, message: str) -> None:
    response = served.client.post("/api/evaluators", json=body, headers=admin(served))
    assert response.status_code == status and message in response.json()["error"]["message"]
    param = response.json()["error"]["param"]
    if "sampling" in message or "not served" in message:  # the field the message names first
        assert param == ("sampling" if "sampling" in message else "judge")


def test_scopes_and_projects(served: Served) -> None:
    headers = admin(served)
    assert served.client.post("/api/evaluators", json=PARIS, headers=served.auth).status_code == 403
    assert served.client.post("/api/evaluators", json=PARIS, headers=headers).status_code == 201
    other = {"Authorization": f"Bearer {served.other_key}"}
    assert served.client.get("/api/evaluators", headers=other).json()["data"] == []
    assert served.client.get("/api/evaluators/paris", headers=other).status_code == 404
    assert served.client.get("/api/evaluators").status_code == 401
    huge = {**PARIS, "name": "huge", "scorer": {"type": "contains", "value": "x" * 70_000}}
    assert served.client.post("/api/evaluators", json=huge, headers=headers).status_code == 413
    bad_time = served.client.post(
        "/api/evaluators/paris/backfill", json={"start": "yesterday"}, headers=headers
    )
    assert bad_time.status_code == 400 and bad_time.json()["error"]["param"] == "start"
    backwards = served.client.post(
        "/api/evaluators/paris/backfill", json={"start": "1h", "end": "2h"}, headers=headers
    )
    assert backwards.status_code == 400
