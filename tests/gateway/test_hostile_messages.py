"""Issue 21 class 11: a ``/v1/messages`` body of the wrong shape (``tools: [5]``, ``metadata: 5``, odd
content blocks) is a 400 in Anthropic's error shape, and recorded like every refused call."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.gateway.conftest import Gateway

GOOD: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}
HOSTILE: list[dict[str, Any]] = [
    {"tools": [5]},
    {"tools": [{"name": 5}]},
    {"tools": 5},
    {"tools": [{"name": "f", "input_schema": 5}]},
    {"metadata": 5},
    {"metadata": {"user_id": 5}},
    {"tool_choice": 5},
    {"tool_choice": {"type": "tool"}},
    {"system": 5},
    {"system": [5]},
    {"system": [{"type": "text", "text": 5}]},
    {"stop_sequences": "x"},
    {"stream": "yes"},
    {"top_p": "high"},
    {"messages": [{"role": "user", "content": [5]}]},
    {"messages": [{"role": "user", "content": [{"type": 5}]}]},
    {"messages": [{"role": "user", "content": [{"type": "bogus"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": ["a"]}]}]},
    {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": 5}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": 5}]}]},
]


@pytest.mark.parametrize("change", HOSTILE, ids=[str(h)[:60] for h in HOSTILE])
def test_odd_messages_bodies_are_anthropic_400s(gateway: Gateway, change: dict[str, Any]) -> None:
    answer = httpx.post(
        gateway.server.base_url + "/v1/messages", json={**GOOD, **change}, headers=gateway.auth
    )
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body


def test_refused_messages_are_traced(gateway: Gateway) -> None:
    for change in ({"tools": [5]}, {"metadata": 5}):
        answer = httpx.post(
            gateway.server.base_url + "/v1/messages", json={**GOOD, **change}, headers=gateway.auth
        )
        assert answer.status_code == 400
    traces = gateway.traces(2)
    assert len(traces) == 2
    assert all(t["status"] == "error" for t in traces), traces
    ok = httpx.post(gateway.server.base_url + "/v1/messages", json=GOOD, headers=gateway.auth)
    assert ok.status_code == 200, ok.text
