"""The query API: lists, filters, detail, scores, sessions, metrics, scoping and bad input."""

from __future__ import annotations

import pytest

from tests.server.conftest import Served
from tests.spans import export_request, llm_attributes, new_span_id, new_trace_id, otlp_span

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def send(served: Served, spans: list, key: str | None = None) -> None:  # type: ignore[type-arg]
    headers = {**PROTOBUF, "Authorization": f"Bearer {key or served.key}"}
    r = served.client.post("/v1/traces", content=export_request(spans).SerializeToString(), headers=headers)
    assert r.status_code == 200, r.text
    served.drain()


def agent_trace() -> tuple[bytes, list]:  # type: ignore[type-arg]
    trace, root, tool = new_trace_id(), new_span_id(), new_span_id()
    spans = [
        otlp_span(
            "agent",
            {
                "openinference.span.kind": "AGENT",
                "input.value": "Weather in Paris?",
                "session.id": "sess-1",
                "user.id": "alice",
                "tag.tags": ["prod", "v2"],
            },
            trace_id=trace,
            span_id=root,
            duration_ms=900,
        ),
        otlp_span(
            "get_weather",
            {"openinference.span.kind": "TOOL", "input.value": '{"city": "Paris"}'},
            trace_id=trace,
            span_id=tool,
            parent_id=root,
            duration_ms=100,
        ),
        otlp_span(
            "llm",
            llm_attributes(model="gpt-4o", prompt=50, completion=12),
            trace_id=trace,
            parent_id=root,
            duration_ms=400,
        ),
    ]
    return trace, spans


def test_trace_detail_has_tree_and_scores(served: Served) -> None:
    trace, spans = agent_trace()
    send(served, spans)
    r = served.client.get(f"/api/traces/{trace.hex()}", headers=served.auth)
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "agent" and body["session_id"] == "sess-1" and body["user_id"] == "alice"
    assert body["tags"] == ["prod", "v2"]
    assert body["input"] == "Weather in Paris?"
    assert [(o["name"], o["depth"], o["type"]) for o in body["observations"]] == [
        ("agent", 0, "span"),
        ("get_weather", 1, "tool"),
        ("llm", 1, "generation"),
    ]
    llm = body["observations"][2]
    assert llm["model"] == "gpt-4o" and llm["usage"]["input"] == 50 and llm["usage"]["output"] == 12
    # priced at ingest from the catalogue: gpt-4o $2.50 in / $10 out per 1M tokens
    assert llm["cost"]["items"] == pytest.approx({"input": 50 * 2.5e-6, "output": 12 * 10e-6})
    r = served.client.post(
        "/api/scores",
        json={"trace_id": trace.hex(), "name": "helpful", "value": 4, "comment": "good"},
        headers=served.auth,
    )
    assert r.status_code == 201, r.text
    scores = served.client.get(f"/api/traces/{trace.hex()}", headers=served.auth).json()["scores"]
    assert [(s["name"], s["value"], s["comment"]) for s in scores] == [("helpful", 4.0, "good")]


def test_filters_over_http(served: Served) -> None:
    _, spans = agent_trace()
    send(served, spans)
    send(served, [otlp_span("other", llm_attributes(model="claude", **{"user.id": "bob"}), error=True)])

    def names(query: str) -> list[str]:
        r = served.client.get(f"/api/traces?{query}", headers=served.auth)
        assert r.status_code == 200, r.text
        return [t["name"] for t in r.json()["data"]]

    assert names("") == ["other", "agent"]
    assert names("user_id=alice") == ["agent"]
    assert names("model=gpt-4o") == ["agent"]
    assert names("status=error") == ["other"]
    assert names("tag=prod&tag=v2") == ["agent"]
    assert names("q=Weather%20in") == ["agent"]
    assert names("min_latency_ms=500") == ["agent"]
    assert names("from=1h") == ["other", "agent"]
    assert names("from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z") == []
    page = served.client.get("/api/traces?limit=1", headers=served.auth).json()
    assert len(page["data"]) == 1 and page["next"]
    page2 = served.client.get(f"/api/traces?limit=1&cursor={page['next']}", headers=served.auth).json()
    assert [t["name"] for t in page2["data"]] == ["agent"] and page2["next"] is None
    sessions = served.client.get("/api/sessions", headers=served.auth).json()["data"]
    assert [(s["id"], s["trace_count"]) for s in sessions] == [("sess-1", 1)]
    metrics = served.client.get("/api/metrics/models?from=1h&granularity=minute", headers=served.auth).json()[
        "data"
    ]
    assert {m["model"] for m in metrics} == {"gpt-4o", "claude"}


def test_bad_query_input_gets_clear_400s(served: Served) -> None:
    for query, param in [
        ("limit=abc", "limit"),
        ("limit=100000", "limit"),
        ("cursor=%%%", "cursor"),
        ("from=yesterday-ish", "from"),
        ("status=maybe", "status"),
        ("min_latency_ms=fast", "min_latency_ms"),
        ("colour=red", "colour"),
    ]:
        r = served.client.get(f"/api/traces?{query}", headers=served.auth)
        assert r.status_code == 400, query
        assert r.json()["error"]["param"] == param, query
    # A time range that ends before it starts (on every endpoint that takes one)
    for path in ("/api/traces", "/api/sessions", "/api/metrics/models"):
        r = served.client.get(f"{path}?from=2d&to=3d", headers=served.auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "to", path
        assert "the time range ends ('3d') before it starts ('2d')" in r.json()["error"]["message"]
    r = served.client.get("/api/metrics/models?to=2d", headers=served.auth)  # before the default 24h
    assert r.status_code == 400 and "before it starts (its default start)" in r.json()["error"]["message"]
    r = served.client.post("/api/scores", content=b"{oops", headers=served.auth)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = served.client.post(
        "/api/scores",
        json={"trace_id": "00", "name": "x", "value": "nan-ish", "data_type": "numeric"},
        headers=served.auth,
    )
    assert r.status_code == 400 and "numeric" in r.json()["error"]["message"]
    r = served.client.get("/api/nothing-here", headers=served.auth)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    # a POST to no endpoint is a 404 too (it matched only the UI's GET-only catch-all page: was a 405),
    # and an Anthropic client given .../v1 as its base_url is told why
    for path in ("/api/nothing-here", "/v1/no-such-endpoint", "/nowhere"):
        r = served.client.post(path, json={}, headers=served.auth)
        assert r.status_code == 404 and r.json()["error"]["message"] == "Not found.", path
    r = served.client.post("/v1/v1/messages", json={}, headers=served.auth)
    assert r.status_code == 404 and "an Anthropic client's is the server's address" in r.text
    r = served.client.post("/api/traces", json={}, headers=served.auth)  # a known path, another method
    assert r.status_code == 405 and r.json()["error"]["message"] == "Method not allowed."


def test_other_projects_ids_are_404(served: Served) -> None:
    trace, spans = agent_trace()
    send(served, spans, key=served.other_key)
    assert served.client.get(f"/api/traces/{trace.hex()}", headers=served.auth).status_code == 404
    assert served.client.get("/api/traces", headers=served.auth).json()["data"] == []
    r = served.client.post(
        "/api/scores", json={"trace_id": trace.hex(), "name": "x", "value": 1}, headers=served.auth
    )
    assert r.status_code == 404
    other = {"Authorization": f"Bearer {served.other_key}"}
    assert served.client.get(f"/api/traces/{trace.hex()}", headers=other).status_code == 200


def test_costs_read_without_float_noise(served: Served) -> None:
    """Line items of $0.00002 + $0.00015 + $0.00001 sum to 0.00017999999999999998 in floats: the API
    answers 0.00018 (sums of USD rounded to 1e-12, as each line item is)."""
    trace = new_trace_id()
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.usage.input_tokens": 120,  # 100 of them read from the provider's cache
        "gen_ai.usage.cache_read.input_tokens": 100,
        "gen_ai.usage.output_tokens": 30,
    }
    send(served, [otlp_span("chat", attributes, trace_id=trace)])
    listed = served.client.get("/api/traces", headers=served.auth).json()["data"]
    detail = served.client.get(f"/api/traces/{trace.hex()}", headers=served.auth).json()
    [summary] = [t for t in listed if t["id"] == trace.hex()]
    assert sum(detail["observations"][0]["cost"]["items"].values()) == 0.00017999999999999998
    assert summary["cost_usd"] == detail["cost_usd"] == detail["observations"][0]["cost"]["total"] == 0.00018


def test_score_ids_are_per_project_and_collisions_say_nothing_of_other_projects(served: Served) -> None:
    """Issue 21 class 11: a score id another project already uses is this project's to use (no 500, no
    hint that it exists); the project's own duplicate is a 409; odd ids are 400s."""
    mine, theirs = new_trace_id(), new_trace_id()
    send(served, [otlp_span("a", {}, trace_id=mine)])
    send(served, [otlp_span("b", {}, trace_id=theirs)], key=served.other_key)
    served.drain()
    other = {"Authorization": f"Bearer {served.other_key}"}
    score = {"id": "shared-id", "name": "ok", "value": 1}
    first = served.client.post("/api/scores", json={**score, "trace_id": theirs.hex()}, headers=other)
    assert first.status_code == 201, first.text
    again = served.client.post("/api/scores", json={**score, "trace_id": mine.hex()}, headers=served.auth)
    assert again.status_code == 201, again.text
    assert again.json()["id"] == "shared-id"
    twice = served.client.post("/api/scores", json={**score, "trace_id": mine.hex()}, headers=served.auth)
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "duplicate_score_id"
    batch = [{**score, "id": "dup", "trace_id": mine.hex()}] * 2
    assert served.client.post("/api/scores", json=batch, headers=served.auth).status_code == 409
    for odd in ("x" * 33, 5, ["a"], "", "bad id"):
        answer = served.client.post(
            "/api/scores", json={**score, "id": odd, "trace_id": mine.hex()}, headers=served.auth
        )
        assert answer.status_code in (400, 201), answer.text
        assert answer.status_code == 400 or odd == ""  # "" asks for a new id, like no id
    for field, odd in (("source", ["x"]), ("observation_id", 5), ("data_type", 5)):
        answer = served.client.post(
            "/api/scores", json={**score, "id": None, field: odd, "trace_id": mine.hex()}, headers=served.auth
        )
        assert answer.status_code == 400, (field, answer.text)
    detail = served.client.get(f"/api/traces/{mine.hex()}", headers=served.auth).json()
    assert [s["id"] for s in detail["scores"]].count("shared-id") == 1


def test_a_key_that_sends_traces_may_send_scores_and_a_gateway_key_may_not(served: Served) -> None:
    """The SDK sends ``pilothouse.score`` with the key it sends traces with: a key made with
    ``--scopes ingest`` (for a CI job, say) was refused its scores with a 403."""
    from pilothouse.domain.keys import Scope

    trace, spans = agent_trace()
    send(served, spans)
    _, ingest_only = served.store.create_api_key("p1", "ci", frozenset({Scope.INGEST}))
    _, gateway_only = served.store.create_api_key("p1", "app", frozenset({Scope.GATEWAY}))
    score = {"trace_id": trace.hex(), "name": "ci-check", "value": 1}
    sent = served.client.post("/api/scores", json=score, headers={"Authorization": f"Bearer {ingest_only}"})
    assert sent.status_code == 201, sent.text
    app_key = {"Authorization": f"Bearer {gateway_only}"}
    refused = served.client.post("/api/scores", json=score, headers=app_key)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "This key lacks the 'ingest' or 'read' scope."
