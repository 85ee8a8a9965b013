"""Money cannot be mis-accounted by one client or one upstream (issue 21, classes 5 and 6): token
counts are bounded, spans a client sends never move a budget, and every failed call, whatever the
failure, releases its budget hold, is traced and gets a clear error in the surface's shape."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pilothouse.domain.budgets import BudgetPeriod, BudgetScope
from pilothouse.domain.keys import Scope
from pilothouse.domain.money import Money
from pilothouse.domain.traces import MAX_CALL_TOKENS, USAGE_CLAMPED
from pilothouse.store.costs import CostStore
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer

pytestmark = pytest.mark.slow  # real servers, several each
MESSAGES = [{"role": "user", "content": "hi"}]
Answer = Callable[[dict[str, Any]], tuple[int, bytes]]


def completion(prompt: Any = 20, output: Any = 10, **extra: Any) -> bytes:
    """An OpenAI chat completion with the usage given (any JSON, even nonsense)."""
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "model": "m-1",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": 0},
            **extra,
        }
    ).encode()


class ScriptedUpstream:
    """An OpenAI-compatible upstream whose answers a test scripts: ``answer(request) -> (status,
    body)`` per call (default: a normal completion)."""

    def __init__(self) -> None:
        self.answer: Answer = lambda _request: (200, completion())
        self.requests = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                upstream.requests += 1
                status, body = upstream.answer(request)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def scripted() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    yield upstream
    upstream.server.shutdown()


def _config(tmp_path: Path, upstream: ScriptedUpstream, price: float = 1.0) -> Path:
    """One model, "m", at ``price`` USD per 1M tokens in and out, served by ``upstream``."""
    path = tmp_path / "money.yaml"
    model = {
        "name": "m",
        "provider": "openai",
        "model": "m-1",
        "base_url": upstream.base_url,
        "price": {"input": price, "output": price},
    }
    path.write_text(yaml.safe_dump({"models": [model], "router": {"retries": 0, "backoff_s": 0.01}}))
    return path


def _with_budget(url: str, limit_usd: str, scope: BudgetScope = BudgetScope.PROJECT, value: str = "") -> None:
    store = SqlStore.from_url(url)
    try:
        CostStore(store).create_budget("default", scope, value, BudgetPeriod.TOTAL, Money.from_usd(limit_usd))
    finally:
        store.close()


def _chat(server: InProcessServer, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, "max_tokens": 10, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _budget(server: InProcessServer, key: str) -> dict[str, Any]:
    (budget,) = httpx.get(
        f"{server.base_url}/api/budgets", headers={"Authorization": f"Bearer {key}"}
    ).json()["data"]
    return dict(budget)


def _traces(server: InProcessServer, key: str, expected: int) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(200):
        rows = httpx.get(f"{server.base_url}/api/traces", params={"limit": 100}, headers=auth).json()["data"]
        if len(rows) >= expected:
            break
        time.sleep(0.05)
    return [httpx.get(f"{server.base_url}/api/traces/{r['id']}", headers=auth).json() for r in rows]


# -- class 5: token counts -------------------------------------------------------------------------------


def test_negative_upstream_token_counts_cannot_unlock_a_hard_budget(
    tmp_path: Path, scripted: ScriptedUpstream
) -> None:
    # $1 per 1M tokens; a normal call (20 in, 10 out) costs $0.00003; the budget takes three of them
    url = sqlite_at_head(tmp_path / "neg.db")
    _with_budget(url, "0.0001")
    answers = iter([completion(output=-4_000_000), completion(prompt=-3.5, output="lots")])
    scripted.answer = lambda _r: (200, next(answers, completion()))
    with InProcessServer(url, home=tmp_path, config=_config(tmp_path, scripted)) as server:
        key = server.create_key()
        statuses = []
        for _ in range(12):
            response = _chat(server, key)
            statuses.append(response.status_code)
            if response.status_code == 200:
                assert Money.from_usd(response.headers["x-pilothouse-cost-usd"]) >= Money.ZERO
        # before: -4M tokens settled -$4 and every one of the 12 calls went through
        assert statuses.count(200) <= 5 and statuses[-1] == 429, statuses
        budget = _budget(server, key)
        assert 0 <= budget["spent_usd"] <= 0.0001 and budget["reserved_usd"] == 0
        traces = _traces(server, key, len(statuses))
        clamped = [
            o for t in traces for o in t["observations"] if (o.get("attributes") or {}).get(USAGE_CLAMPED)
        ]
        assert len(clamped) == 2  # both nonsense answers are marked on their spans


def test_absurd_upstream_token_counts_are_bounded_by_the_request(
    tmp_path: Path, scripted: ScriptedUpstream
) -> None:
    url = sqlite_at_head(tmp_path / "huge.db")
    _with_budget(url, "1")
    scripted.answer = lambda _r: (200, completion(prompt=20, output=10**15))
    with InProcessServer(url, home=tmp_path, config=_config(tmp_path, scripted)) as server:
        key = server.create_key()
        first = _chat(server, key)
        assert first.status_code == 200
        # at most the 10 output tokens asked for are billed: $0.00003, not $1e9
        assert Money.from_usd(first.headers["x-pilothouse-cost-usd"]) == Money.from_usd("0.00003")
        assert _chat(server, key).status_code == 200  # the budget is not blocked
        (trace, _) = _traces(server, key, 2)
        (call,) = trace["observations"]
        assert call["attributes"][USAGE_CLAMPED] is True


def _otlp_json_with_usage(prompt: int, completion: int, **attributes: str) -> bytes:
    """An OTLP/JSON export of one LLM call (gpt-4o) reporting these token counts."""
    now = time.time_ns()
    attrs = {
        "openinference.span.kind": {"stringValue": "LLM"},
        "llm.model_name": {"stringValue": "gpt-4o"},
        "llm.token_count.prompt": {"intValue": str(prompt)},
        "llm.token_count.completion": {"intValue": str(completion)},
        **{k: {"stringValue": v} for k, v in attributes.items()},
    }
    span = {
        "traceId": os.urandom(16).hex(),
        "spanId": os.urandom(8).hex(),
        "name": "llm",
        "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 10**8),
        "attributes": [{"key": k, "value": v} for k, v in attrs.items()],
    }
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def test_spans_a_client_sends_never_move_a_budget(
    tmp_path: Path, scripted: ScriptedUpstream, empty_pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Spans are recorded and reported (their token counts bounded) but budgets count only the calls
    the gateway metered: sending spans can neither block a budget (10^15 tokens) nor unblock one
    (negative tokens), even across a restart, when the ledgers are seeded from the database."""
    _with_budget(empty_pg_url, "0.0001")
    _with_budget(empty_pg_url, "0.0001", BudgetScope.KEY, "victim")
    config = _config(tmp_path, scripted)
    with InProcessServer(empty_pg_url, home=tmp_path, config=config) as server:
        ingest = server.create_key("ingest", scopes=frozenset({Scope.INGEST}))
        reader = server.create_key("reader", scopes=frozenset({Scope.READ}))
        for prompt, output in ((10**15, 10**15), (-4_000_000, -4_000_000)):
            sent = httpx.post(
                f"{server.base_url}/v1/traces",
                content=_otlp_json_with_usage(prompt, output, **{"gateway.key_id": "victim"}),
                headers={"Authorization": f"Bearer {ingest}", "content-type": "application/json"},
            )
            assert sent.status_code == 200, sent.text
        traces = _traces(server, reader, 2)
        usages = [o["usage"] for t in traces for o in t["observations"]]
        counts = [u[kind] for u in usages for kind in ("input", "output", "cache_read", "cache_write")]
        assert all(0 <= count <= MAX_CALL_TOKENS for count in counts), usages
        assert all(o["attributes"][USAGE_CLAMPED] for t in traces for o in t["observations"])
        assert all(t["cost_usd"] is None or t["cost_usd"] >= 0 for t in traces)
        assert any("token counts: clamped" in r.getMessage() for r in caplog.records)  # and logged
    # a restart seeds the ledgers from the database: still nothing spent
    with InProcessServer(empty_pg_url, home=tmp_path, config=config) as server:
        key = server.create_key()
        assert _chat(server, key).status_code == 200
        budgets = httpx.get(
            f"{server.base_url}/api/budgets", headers={"Authorization": f"Bearer {key}"}
        ).json()
        spent = {b["scope"]: b["spent_usd"] for b in budgets["data"]}
        assert spent == {"project": pytest.approx(0.00003), "key": 0}


# -- class 6: every failure releases its hold, is traced and answered in the surface's shape ------------

UNREADABLE = [
    b'{"choices": "none"}',
    b'{"choices": [{"message": 5}]}',
    b'{"choices": [{"message": {"content": {"text": "hi"}}}]}',
    b'{"choices": [], "usage": "lots"}',
    b"[1, 2, 3]",
]


def test_unreadable_upstream_answers_are_502_and_release_the_budget(
    tmp_path: Path, scripted: ScriptedUpstream
) -> None:
    # every call holds its worst case, ~$0.00004: the $0.0001 budget takes two holds at once, so
    # leaked holds (held 900 s) would refuse the good call at the end
    url = sqlite_at_head(tmp_path / "leak.db")
    _with_budget(url, "0.0001")
    with InProcessServer(url, home=tmp_path, config=_config(tmp_path, scripted)) as server:
        key = server.create_key()
        auth = {"Authorization": f"Bearer {key}"}
        for body in UNREADABLE:
            scripted.answer = lambda _r, body=body: (200, body)  # type: ignore[misc]
            openai = _chat(server, key)
            assert openai.status_code == 502, openai.text
            assert openai.json()["error"]["code"] == "upstream_unreadable"
            anthropic = httpx.post(
                f"{server.base_url}/v1/messages",
                json={"model": "m", "max_tokens": 10, "messages": MESSAGES},
                headers=auth,
            )
            assert anthropic.status_code == 502, anthropic.text
            assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "api_error"
            stream = _chat(server, key, stream=True)  # the stream's chunks are not chunks either
            assert stream.status_code in (200, 502) and "upstream" in stream.text
        assert _budget(server, key)["reserved_usd"] == 0
        scripted.answer = lambda _r: (200, completion())
        assert _chat(server, key).status_code == 200
        traces = _traces(server, key, 3 * len(UNREADABLE) + 1)
        statuses = sorted(t["observations"][0]["attributes"]["gateway.http_status"] for t in traces)
        assert len(traces) == 3 * len(UNREADABLE) + 1  # every call traced, failures too
        assert statuses.count(200) >= 1 and statuses.count(502) >= 2 * len(UNREADABLE)


def test_an_odd_tool_choice_is_a_traced_400_before_any_hold(tmp_path: Path) -> None:
    url = sqlite_at_head(tmp_path / "tools.db")
    _with_budget(url, "0.0001")
    config = tmp_path / "sim.yaml"
    config.write_text(
        yaml.safe_dump(
            {"models": [{"name": "m", "provider": "sim", "model": "s", "price": {"input": 1, "output": 1}}]}
        )
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    odd: list[Any] = [{"type": "function", "function": "f"}, 5, "sometimes", {"function": {"name": "f"}}]
    with InProcessServer(url, home=tmp_path, config=config) as server:
        key = server.create_key()
        for choice in odd:
            response = _chat(server, key, tools=tools, tool_choice=choice)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["param"] == "tool_choice" and error["type"] == "invalid_request_error"
        assert _budget(server, key)["reserved_usd"] == 0
        good = _chat(server, key, tools=tools, tool_choice={"type": "function", "function": {"name": "f"}})
        assert good.status_code == 200
        traces = _traces(server, key, len(odd) + 1)
        assert len(traces) == len(odd) + 1


def test_an_unreadable_stream_chunk_ends_the_stream_and_releases_the_hold(
    tmp_path: Path, scripted: ScriptedUpstream
) -> None:
    # a stream cut before its usage arrived counts its worst case (the upstream may have billed it),
    # so the budget is roomier here; what matters is that no hold is left
    url = sqlite_at_head(tmp_path / "chunks.db")
    _with_budget(url, "1")
    good = b'data: {"choices": [{"index": 0, "delta": {"content": "ok"}}], "model": "m-1"}\n\n'
    bad = [b'data: {"choices": 5}\n\n', b"data: [1, 2]\n\n", b'data: {"choices": [{"delta": "x"}]}\n\n']
    with InProcessServer(url, home=tmp_path, config=_config(tmp_path, scripted)) as server:
        key = server.create_key()
        for chunk in bad:
            scripted.answer = lambda _r, chunk=chunk: (200, good + chunk + b"data: [DONE]\n\n")  # type: ignore[misc]
            for path, body in (
                ("/v1/chat/completions", {"stream": True, "messages": MESSAGES}),
                ("/v1/messages", {"stream": True, "messages": MESSAGES}),
            ):
                response = httpx.post(
                    f"{server.base_url}{path}",
                    json={"model": "m", "max_tokens": 10, **body},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert response.status_code == 200  # the stream began; it ends with an error event
                last = response.text.strip().rsplit("\n\n", 1)[-1]  # the stream's last event: an error
                assert "error" in last and "upstream" in last, last
        assert _budget(server, key)["reserved_usd"] == 0
        scripted.answer = lambda _r: (200, completion())
        assert _chat(server, key).status_code == 200
        traces = _traces(server, key, 2 * len(bad) + 1)
        errors = [t for t in traces if t["observations"][0]["status"] == "error"]
        assert len(errors) == 2 * len(bad)
