"""Native Anthropic pass-through: the official ``anthropic`` client on ``/v1/messages`` to an Anthropic
deployment (a SimulatedUpstream speaking Anthropic's API behind the gateway, on loopback): what the
client sent reaches the upstream unchanged, thinking blocks and stop sequences come back, the stream's
events are Anthropic's own, 529 stays overloaded, count_tokens and the Anthropic model list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from pilothouse.providers.simulated_model import count_tokens, prompt_text
from pilothouse.testing import SimConfig, SimulatedUpstream
from tests.gateway.conftest import Gateway, start_gateway

pytestmark = pytest.mark.slow  # the real client over loopback

IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
PDF = "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCmVuZHN0cmVhbQplbmRvYmoK"


@pytest.fixture(scope="module")
def echo() -> Iterator[SimulatedUpstream]:
    with SimulatedUpstream(SimConfig(echo=True)) as up:
        yield up


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, echo: SimulatedUpstream) -> Iterator[Gateway]:
    models = [
        {"name": "claude", "provider": "anthropic", "model": "claude-sonnet-4", "base_url": echo.base_url},
        {
            "name": "claude-busy",
            "provider": "anthropic",
            "model": "claude-sonnet-4",
            "base_url": echo.base_url,
            "options": {"headers": {"x-sim-status": "529"}},
        },
        {"name": "gpt", "provider": "openai", "model": "gpt-4o-mini", "base_url": echo.base_url + "/v1"},
    ]
    gateway = start_gateway(tmp_path_factory.mktemp("native"), echo, models, router={"retries": 0})
    yield gateway
    gateway.server.stop()


def _client(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.server.base_url, api_key=gw.key, max_retries=0)


RICH: dict[str, Any] = {
    "model": "claude",
    "max_tokens": 64,
    "system": [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Cite sources.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "first part"},
                {"type": "text", "text": "second part", "cache_control": {"type": "ephemeral"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "look", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "no such page",
                    "is_error": True,
                },
                {"type": "text", "text": "alpha beta STOP gamma"},
            ],
        },
    ],
    "tools": [{"name": "look", "description": "look", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "output_config": {"effort": "low"},
    "stop_sequences": ["STOP"],
    "metadata": {"user_id": "u-1"},
}


def test_what_the_client_sent_reaches_the_upstream_and_comes_back(
    gw: Gateway, echo: SimulatedUpstream
) -> None:
    client = _client(gw)
    beta = {"anthropic-beta": "prompt-caching-2024-07-31"}
    # top_k: gone from this client's signature, still taken by Anthropic's API (extra_body sends it)
    message = client.messages.create(**RICH, extra_headers=beta, extra_body={"top_k": 5})
    sent = echo.requests[-1]
    assert {k: v for k, v in sent.items() if k not in ("model", "stream")} == {
        **{k: v for k, v in RICH.items() if k != "model"},
        "top_k": 5,
    }
    assert sent["model"] == "claude-sonnet-4" and echo.request_headers[-1]["anthropic-beta"] == (
        "prompt-caching-2024-07-31"
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].signature == "sim-signature"  # type: ignore[union-attr]
    assert message.content[1].text == "alpha beta"  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")

    with client.messages.stream(**RICH, extra_body={"top_k": 5}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = next(e for e in events if e.type == "message_start")
    assert start.message.usage.input_tokens > 0  # the real count, before any output
    assert start.message.usage.input_tokens == message.usage.input_tokens
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking and final.content[0].signature == "sim-signature"  # type: ignore[union-attr]
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "STOP")
    assert echo.requests[-1]["top_k"] == 5 and echo.requests[-1]["stream"] is True
    traces = gw.traces(2)
    generation = traces[0]["observations"][0]
    assert generation["status"] == "ok" and generation["usage"]["output"] == final.usage.output_tokens


def test_an_openai_deployment_gets_the_translation_with_text_blocks_kept_apart(
    gw: Gateway, echo: SimulatedUpstream
) -> None:
    request = {
        "model": "gpt",
        "max_tokens": 32,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}
        ],
    }
    message = _client(gw).messages.create(**request)
    sent = echo.requests[-1]
    assert "_anthropic_native" not in sent and "messages" in sent
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
    ]
    assert message.content[0].text == "one two"  # type: ignore[union-attr]


def test_529_stays_overloaded(gw: Gateway) -> None:
    with pytest.raises(anthropic.InternalServerError) as info:
        _client(gw).messages.create(
            model="claude-busy", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_count_tokens_and_the_anthropic_model_list(gw: Gateway, echo: SimulatedUpstream) -> None:
    client = _client(gw)
    counted = client.messages.count_tokens(
        model="claude", messages=[{"role": "user", "content": "one two three"}], system="sys"
    )
    expected = count_tokens(prompt_text([{"role": "user", "content": "one two three"}], "sys"))
    assert counted.input_tokens == expected and echo.requests[-1]["model"] == "claude-sonnet-4"
    estimated = client.messages.count_tokens(
        model="gpt", messages=[{"role": "user", "content": "one two three"}]
    )
    assert estimated.input_tokens > 0
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(model="claude", messages=[])
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert "claude" in ids and all(m.type == "model" for m in page.data)
    raw = httpx.get(f"{gw.base_url}/models", headers={**gw.auth, "anthropic-version": "2023-06-01"}).json()
    assert raw["has_more"] is False and raw["first_id"] == raw["data"][0]["id"]
    openai_shape = httpx.get(f"{gw.base_url}/models", headers=gw.auth).json()
    assert openai_shape["object"] == "list" and openai_shape["data"][0]["object"] == "model"


def test_a_cached_native_answer_is_replayed_with_its_thinking(
    tmp_path: Path, echo: SimulatedUpstream
) -> None:
    models = [
        {"name": "claude", "provider": "anthropic", "model": "claude-sonnet-4", "base_url": echo.base_url}
    ]
    gateway = start_gateway(tmp_path, echo, models, extra={"cache": {"enabled": True, "ttl_s": 600}})
    try:
        client = _client(gateway)
        request: dict[str, Any] = {
            "model": "claude",
            "max_tokens": 32,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "cache me please"}],
        }
        first = client.messages.with_raw_response.create(**request)
        asked = len(echo.requests)
        with client.messages.stream(**request) as stream:
            final = stream.get_final_message()
            assert stream.response.headers["x-pilothouse-cache"] == "hit"
        assert len(echo.requests) == asked  # answered from the cache
        assert final.model_dump()["content"] == first.parse().model_dump()["content"]
        assert [block.type for block in final.content] == ["thinking", "text"]
        # a native stream's own answer is not cached (only its translation was assembled)
        streamed = {**request, "messages": [{"role": "user", "content": "streamed first"}]}
        for _ in range(2):
            with client.messages.stream(**streamed) as stream:
                stream.get_final_message()
                assert stream.response.headers["x-pilothouse-cache"] == "miss"
    finally:
        gateway.server.stop()


def test_hostile_bodies_get_anthropic_errors_not_500s(gw: Gateway) -> None:
    url = f"{gw.base_url}/messages/count_tokens"
    for body in (b"[1, 2]", b"not json", b'{"model": "claude", "messages": "x"}', b'{"model": 5}'):
        answer = httpx.post(url, content=body, headers={**gw.auth, "content-type": "application/json"})
        assert answer.status_code == 400 and answer.json()["type"] == "error", body
    assert httpx.post(url, json={"model": "claude", "messages": []}).status_code == 401  # no key
    noisy = {
        "model": "claude",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"tags": [f"t{i}" * 100 for i in range(500)], **{f"k{i}": "v" * 500 for i in range(500)}},
    }
    headers = {**gw.auth, "x-pilothouse-session-id": "s" * 10_000, "anthropic-beta": "b" * 10_000}
    assert httpx.post(f"{gw.base_url}/messages", json=noisy, headers=headers).status_code == 200
