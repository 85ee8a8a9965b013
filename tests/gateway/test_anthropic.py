"""The Anthropic surfaces: the anthropic client on /v1/messages over an OpenAI-format upstream, and
the openai client on /v1/chat/completions over Anthropic's native API (both against SimulatedUpstream)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from pilothouse.testing import SimulatedUpstream
from tests.gateway.conftest import Gateway, start_gateway

TOOLS = [{"name": "lookup", "description": "look it up", "input_schema": {"type": "object"}}]


@pytest.fixture
def gw(tmp_path: Path, upstream: SimulatedUpstream) -> Iterator[Gateway]:
    models = [
        {
            "name": "gpt-4o-mini",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "base_url": upstream.base_url + "/v1",
        },
        {
            "name": "claude-haiku",
            "provider": "anthropic",
            "model": "claude-haiku-4",
            "base_url": upstream.base_url,
            "api_key": "sk-ant-upstream",
        },
    ]
    gateway = start_gateway(tmp_path, upstream, models)
    yield gateway
    gateway.server.stop()


def test_anthropic_client_on_messages(gw: Gateway) -> None:
    client = anthropic.Anthropic(base_url=gw.server.base_url, api_key=gw.key, max_retries=0)
    msg = client.messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        system="be brief",
        messages=[{"role": "user", "content": "one two three four five six"}],
    )
    assert msg.content[0].type == "text" and msg.content[0].text
    # 8 prompt words, half cached upstream: Anthropic counts input without cache reads
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (4, 4, 14)
    with client.messages.stream(
        model="gpt-4o-mini",
        max_tokens=50,
        messages=[{"role": "user", "content": "one two three four five six"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens == 14 and final.stop_reason == "end_turn"
    tool = client.messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "find cats"}],
    )
    assert (
        tool.stop_reason == "tool_use"
        and tool.content[0].type == "tool_use"
        and tool.content[0].name == "lookup"
    )
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="gpt-4o-mini", max_tokens=5, messages=[])
    traces = gw.traces(5)
    ok = [t["observations"][0] for t in traces if t["observations"][0]["status"] == "ok"]
    # 8 + 14 (with the system prompt), 6 + 14 (streamed, no system prompt), 2 + 5 (the tool call:
    # 2 reasoning tokens and 3 for its arguments)
    assert sorted(o["usage"]["total"] for o in ok) == [7, 20, 22]
    assert json.loads(json.dumps(ok[-1]["input"]))[0] == {"role": "system", "content": "be brief"}


def test_openai_client_over_anthropic_provider(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one two three four five six"},
    ]
    reply = client.chat.completions.create(model="claude-haiku", messages=messages, max_tokens=50)  # type: ignore[arg-type]
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (8, 14)
    chunks = list(
        client.chat.completions.create(
            model="claude-haiku",
            messages=messages,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 8
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    tool = client.chat.completions.create(model="claude-haiku", messages=messages, tools=tools)  # type: ignore[arg-type]
    call = tool.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup" and json.loads(call.function.arguments)["query"]
    sent = gw.upstream.requests[-1]
    assert (
        sent["model"] == "claude-haiku-4"
        and sent["system"] == "be brief"
        and sent["tools"][0]["name"] == "lookup"
    )
    assert gw.upstream.request_headers[-1]["x-api-key"] == "sk-ant-upstream"
    traces = gw.traces(3)
    assert all(t["observations"][0]["provider"] == "anthropic" for t in traces)
    assert all(t["observations"][0]["usage"]["cache_read"] == 4 for t in traces)
