"""Issue 23 item 7 through the API, on SQLite and the real PostgreSQL: the new filters and sorts, bad
input as 400s in the API's shape, export (CSV with formulas quoted, JSONL; bounded), saved views and
bulk actions, each scoped to the caller's project."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from pilothouse.domain.keys import DEFAULT_SCOPES
from pilothouse.domain.traces import SpanRecord, TraceAttributes
from pilothouse.quality.review import ReviewService
from pilothouse.server import Settings, create_app
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from tests.server.conftest import Served
from tests.store.test_search import _trace, tid


@pytest.fixture
def both(store: SqlStore, tmp_path: Path) -> Iterator[Served]:
    """The app over each database, with a key of project p1 and one of p2, and five traces in p1."""
    _, key = store.create_api_key("p1", "test", frozenset(DEFAULT_SCOPES))
    _, other = store.create_api_key("p2", "other", frozenset(DEFAULT_SCOPES))
    records: list[SpanRecord] = []
    for i in range(5):
        name = '=HYPERLINK("http://x")' if i == 4 else f"step {i}"
        meta = TraceAttributes(metadata={"team": "a" if i % 2 else "b"}, tags=("t",))
        records += _trace(i, name=name, input_=f"question {i} about otters", latency_ms=100 * (i + 1),
                          cost=f"0.0{i}", trace=meta, project="p1")  # fmt: skip
    store.write_spans(records)
    app = create_app(Settings(home=tmp_path), store=store)
    with TestClient(app) as client:
        yield Served(client, store, key, other)


def _get(s: Served, path: str, key: str | None = None) -> tuple[int, object]:
    answer = s.client.get(path, headers={"Authorization": f"Bearer {key or s.key}"})
    return answer.status_code, answer.json() if answer.headers["content-type"].startswith(
        "application/json"
    ) else answer.text


def test_filters_search_and_sort(both: Served) -> None:
    status, body = _get(both, "/api/traces?q=otters&sort=latency&order=asc&limit=2&metadata=team:b")
    assert status == 200, body
    assert [t["id"] for t in body["data"]] == [tid(0), tid(2)]  # type: ignore[index]
    status, body = _get(
        both, f"/api/traces?q=otters&sort=latency&order=asc&limit=2&metadata=team:b&cursor={body['next']}"
    )  # type: ignore[index]
    assert [t["id"] for t in body["data"]] == [tid(4)] and body["next"] is None  # type: ignore[index]
    status, body = _get(both, "/api/traces?q=otters", key=both.other_key)
    assert status == 200 and body["data"] == []  # type: ignore[index]


def test_a_cursor_is_refused_by_another_sort(both: Served) -> None:
    """A latency cursor read as a cost (or as a time) silently skipped or repeated rows: now a 400."""
    status, body = _get(both, "/api/traces?sort=latency&limit=2")
    assert status == 200 and body["next"], body  # type: ignore[index]
    cursor = body["next"]  # type: ignore[index]
    for sort in ("cost", "tokens", "time"):
        status, error = _get(both, f"/api/traces?sort={sort}&limit=2&cursor={cursor}")
        assert status == 400 and error["error"]["param"] == "cursor", (sort, error)  # type: ignore[index]
    status, body = _get(both, f"/api/traces?sort=latency&limit=2&cursor={cursor}")
    assert status == 200 and len(body["data"]) == 2  # type: ignore[index]


@pytest.mark.parametrize(
    "query, param",
    [
        ("sort=size", "sort"),
        ("order=up", "order"),
        ("score=q&min_score=nan", "min_score"),
        ("min_score=1", "score"),
        ("metadata=nokey", "metadata"),
        ("q=%21%21%21", "q"),
        ("name=" + "x" * 1001, "name"),
        ("&".join(["tag=x"] * 41), "tag"),
        ("sort=cost&cursor=MTIzOmFi", "cursor"),
        ("bogus=1", "bogus"),
        ("score=q&min_score=0.8&max_score=0.2", "min_score"),  # an empty range: not an empty page
        ("min_latency_ms=500&max_latency_ms=100", "min_latency_ms"),
        ("min_cost_usd=0.5&max_cost_usd=0.1", "min_cost_usd"),
    ],
)
def test_bad_filters_are_400s(both: Served, query: str, param: str) -> None:
    for path in ("/api/traces", "/api/traces/export")[
        : 1 if param == "cursor" else 2
    ]:  # exports ignore cursors
        status, body = _get(both, f"{path}?{query}")
        assert status == 400, (path, query, body)
        assert body["error"]["param"] == param, body  # type: ignore[index]


def test_export_csv_and_jsonl(both: Served) -> None:
    status, text = _get(both, "/api/traces/export?format=csv&metadata=team:b")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(str(text))))
    assert [r["id"] for r in rows] == [tid(4), tid(2), tid(0)]
    assert rows[0]["name"] == '\'=HYPERLINK("http://x")'  # a formula is quoted, not run
    assert rows[1]["input"] == "question 2 about otters"
    status, text = _get(both, "/api/traces/export?format=jsonl&max_rows=2&sort=cost&order=asc")
    lines = [orjson.loads(line) for line in str(text).splitlines()]
    assert [line["id"] for line in lines] == [tid(0), tid(1)]
    status, text = _get(both, "/api/traces/export?format=csv", key=both.other_key)
    assert status == 200 and len(str(text).splitlines()) == 1  # the header only: another project's
    assert _get(both, "/api/traces/export?format=xml")[0] == 400
    assert _get(both, "/api/traces/export?max_rows=100001")[0] == 400


def test_saved_views_are_per_project(both: Served) -> None:
    auth = {"Authorization": f"Bearer {both.key}"}
    other = {"Authorization": f"Bearer {both.other_key}"}
    made = both.client.post(
        "/api/views",
        json={"name": "slow otters", "query": "?q=otters&min_latency_ms=300&cursor=abc"},
        headers=auth,
    )
    assert made.status_code == 201 and made.json()["query"] == "q=otters&min_latency_ms=300"
    assert [v["name"] for v in both.client.get("/api/views", headers=auth).json()["data"]] == ["slow otters"]
    assert both.client.get("/api/views", headers=other).json()["data"] == []
    assert both.client.delete("/api/views/slow otters", headers=other).status_code == 404
    bad = both.client.post("/api/views", json={"name": "bad", "query": "sort=size"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "sort"
    assert both.client.post("/api/views", json={"name": "", "query": ""}, headers=auth).status_code == 400
    assert both.client.delete("/api/views/slow otters", headers=auth).status_code == 204
    assert both.client.get("/api/views", headers=auth).json()["data"] == []


def test_bulk_actions_on_own_traces_only(both: Served) -> None:
    auth = {"Authorization": f"Bearer {both.key}"}
    other = {"Authorization": f"Bearer {both.other_key}"}
    ids = [tid(1), tid(3)]
    done = both.client.post(
        "/api/traces/bulk", json={"action": "dataset", "trace_ids": ids, "dataset": "otters"}, headers=auth
    )
    assert done.status_code == 200 and done.json()["done"] == 2, done.text
    evals = EvalStore(both.store)
    version = evals.get_version("p1", "otters")
    assert version is not None and {i.id for _, i in evals.iter_items(version.id)} == set(ids)
    again = both.client.post(
        "/api/traces/bulk",
        json={"action": "dataset", "trace_ids": [tid(0), *ids], "dataset": "otters"},
        headers=auth,
    )
    assert again.json() == {
        "action": "dataset",
        "done": 1,
        "message": "1 trace added to otters (now v2, 3 items)",
    }
    scored = both.client.post(
        "/api/traces/bulk",
        json={
            "action": "score",
            "trace_ids": ids,
            "score": {"name": "good", "value": 1, "data_type": "numeric"},
        },
        headers=auth,
    )
    assert scored.status_code == 200 and scored.json()["done"] == 2
    assert {s.name for s in both.store.get_trace("p1", tid(1)).scores} == {"good"}  # type: ignore[union-attr]
    ReviewService(both.store).create_queue("p1", "look", [])
    queued = both.client.post(
        "/api/traces/bulk", json={"action": "review", "trace_ids": ids, "queue": "look"}, headers=auth
    )
    assert queued.status_code == 200 and queued.json()["done"] == 2
    twice = both.client.post(
        "/api/traces/bulk", json={"action": "review", "trace_ids": ids, "queue": "look"}, headers=auth
    )
    assert twice.json()["done"] == 0 and twice.json()["message"] == "every trace is in look already"
    empty = both.client.post(
        "/api/traces/bulk", json={"action": "review", "trace_ids": [], "queue": "look"}, headers=auth
    )
    assert empty.json()["error"]["message"] == "Give trace_ids: a list of 1 to 1,000 trace ids."
    # another project's key: the traces are not there, and nothing changes
    for body in (
        {"action": "score", "trace_ids": ids, "score": {"name": "bad", "value": 0}},
        {"action": "dataset", "trace_ids": ids, "dataset": "stolen"},
    ):
        refused = both.client.post("/api/traces/bulk", json=body, headers=other)
        assert refused.status_code == 400 and "not in this project" in refused.json()["error"]["message"]
    assert EvalStore(both.store).get_version("p2", "stolen") is None
    assert {s.name for s in both.store.get_trace("p1", tid(1)).scores} == {"good"}  # type: ignore[union-attr]
    for body in (
        {"action": "explode", "trace_ids": ids},
        {"action": "score", "trace_ids": ids, "score": {"name": "n", "value": "high"}},
        {"action": "score", "trace_ids": ids, "score": {"name": "n", "value": float("nan")}},
        {"action": "dataset", "trace_ids": [], "dataset": "x"},
        {"action": "dataset", "trace_ids": ["a"] * 2 + [str(i) for i in range(1001)], "dataset": "x"},
    ):
        refused = both.client.post(
            "/api/traces/bulk", content=_json(body), headers={**auth, "content-type": "application/json"}
        )
        assert refused.status_code == 400, (body, refused.text)
    unknown = both.client.post("/api/traces/bulk", json={"action": "explode"}, headers=auth)
    assert unknown.json()["error"]["message"] == "'action' must be one of dataset, score, review."


def _json(body: dict[str, object]) -> bytes:
    import json

    return json.dumps(body).encode()  # NaN as the token NaN, which the server must refuse
