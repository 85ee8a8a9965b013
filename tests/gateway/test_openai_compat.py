"""The official ``openai`` client against the gateway (served on loopback, SimulatedUpstream behind
it): the Responses API (stream and not, tools, previous_response_id, retrieve and delete), legacy
completions, model retrieval and the key's model list, the routes without ``/v1``, error types and
headers (request ids, x-should-retry, an upstream's 401)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from pilothouse.testing import SimulatedUpstream
from tests.gateway.conftest import Gateway, start_gateway

pytestmark = pytest.mark.slow  # the real client over loopback, a second or more each

TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "look it up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: SimulatedUpstream) -> Iterator[Gateway]:
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
        },
        {
            "name": "misconfigured",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "base_url": upstream.base_url + "/v1",
            "options": {"headers": {"x-sim-status": "401"}},
        },
        {"name": "up/*", "provider": "openai", "base_url": upstream.base_url + "/v1"},
    ]
    extra = {"aliases": {"gpt-4": "gpt-4o-mini", "fast": "up/gpt-4.1-nano"}}
    gateway = start_gateway(tmp_path_factory.mktemp("compat"), upstream, models, extra=extra)
    yield gateway
    gateway.server.stop()


def client(gw: Gateway, key: str | None = None, base_url: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url or gw.base_url, api_key=key or gw.key, max_retries=0)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku"])
def test_responses_create_and_continue(gw: Gateway, model: str) -> None:
    api = client(gw)
    raw = api.responses.with_raw_response.create(
        model=model, instructions="be brief", input="one two three four five six"
    )
    first = raw.parse()
    assert raw.headers["x-request-id"] == "req_" + raw.headers["x-pilothouse-trace-id"]
    assert first.id.startswith("resp_") and first.status == "completed" and first.model == model
    assert first.output_text and first.output[0].type == "message"
    assert first.usage is not None and first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    second = api.responses.create(model=model, input="and seven", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text
    # the second turn sent the first (its instructions not carried over) to the upstream
    assert second.usage is not None and second.usage.input_tokens > first.usage.input_tokens - 3
    assert api.responses.retrieve(first.id).output_text == first.output_text
    assert api.responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as info:
        api.responses.create(model=model, input="x", previous_response_id=first.id)
    assert info.value.param == "previous_response_id"


def test_responses_stream_events(gw: Gateway) -> None:
    api = client(gw)
    events = list(api.responses.create(model="gpt-4o-mini", input="stream these words please", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert text and final.output_text == text and final.usage is not None and final.usage.output_tokens > 0
    # the SDK's own accumulator agrees, and a streamed response is stored like any other
    with api.responses.stream(model="gpt-4o-mini", input="stream these words please") as stream:
        streamed = stream.get_final_response()
    assert streamed.output_text == text
    follow = api.responses.create(model="gpt-4o-mini", input="more", previous_response_id=streamed.id)
    assert follow.status == "completed"
    with httpx.stream(
        "POST",
        gw.base_url + "/responses",
        headers=gw.auth,
        json={"model": "gpt-4o-mini", "input": "x", "stream": True},
    ) as r:
        assert r.headers["cache-control"] == "no-cache" and r.headers["x-request-id"].startswith("req_")


def test_responses_function_tools(gw: Gateway) -> None:
    api = client(gw)
    first = api.responses.create(model="gpt-4o-mini", input="find cats", tools=[TOOL])  # type: ignore[list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "lookup" and json.loads(calls[0].arguments or "{}") is not None
    output = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "three cats"}
    second = api.responses.create(
        model="gpt-4o-mini",
        input=[output],
        previous_response_id=first.id,
        tools=[TOOL],  # type: ignore[list-item]
    )
    assert second.status == "completed"
    events = list(api.responses.create(model="gpt-4o-mini", input="find cats", tools=[TOOL], stream=True))  # type: ignore[list-item]
    kinds = [e.type for e in events]
    assert (
        "response.function_call_arguments.delta" in kinds or "response.function_call_arguments.done" in kinds
    )
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert any(item.type == "function_call" and item.name == "lookup" for item in done)
    # the whole conversation as items, without a stored response
    replay: list[Any] = [
        {"role": "user", "content": [{"type": "input_text", "text": "find cats"}]},
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "three cats"},
    ]
    assert api.responses.create(model="gpt-4o-mini", input=replay, store=False).output_text
    # a stored response's input items, a page at a time (the SDK follows the pages)
    stored = api.responses.create(model="gpt-4o-mini", input=replay)
    page = api.responses.input_items.list(stored.id, limit=2, order="asc")
    assert [item.type for item in page.data] == ["message", "function_call"] and page.has_more
    assert [item.type for item in page] == ["message", "function_call", "function_call_output"]
    newest = api.responses.input_items.list(second.id).data
    assert [(item.type, item.call_id) for item in newest] == [("function_call_output", calls[0].call_id)]  # type: ignore[union-attr]


def test_legacy_completions_and_models(gw: Gateway) -> None:
    api = client(gw)
    completion = api.completions.create(model="gpt-4o-mini", prompt="say something", max_tokens=20)
    assert completion.object == "text_completion" and completion.choices[0].text
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    chunks = list(
        api.completions.create(
            model="gpt-4o-mini",
            prompt="say something",
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) and chunks[-1].usage is not None
    assert api.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("nope")
    narrow = gw.server.create_key("narrow", models=frozenset({"claude-haiku"}))
    assert [m.id for m in client(gw, narrow).models.list()] == ["claude-haiku"]
    with pytest.raises(openai.NotFoundError):
        client(gw, narrow).models.retrieve("gpt-4o-mini")
    # the same routes without the /v1 prefix
    bare = client(gw, base_url=gw.server.base_url)
    assert bare.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    ).choices
    assert bare.responses.create(model="gpt-4o-mini", input="hi").output_text
    assert "gpt-4o-mini" in [m.id for m in bare.models.list()]


def test_errors_are_what_the_sdk_expects(gw: Gateway) -> None:
    api = client(gw)
    with pytest.raises(openai.BadRequestError) as info:  # not UnprocessableEntityError (422)
        api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], temperature=5
        )
    assert info.value.code == "invalid_request" and info.value.param == "temperature"
    assert info.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_body={"temprature": 1}
        )
    assert info.value.param == "temprature" and "Unrecognized request argument" in info.value.message
    with pytest.raises(openai.BadRequestError):
        api.responses.create(model="gpt-4o-mini", input="x", extra_body={"bogus": 1})
    with pytest.raises(openai.BadRequestError) as info:
        api.responses.create(model="gpt-4o-mini", input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert info.value.param == "tools"
    with pytest.raises(openai.BadRequestError):
        api.completions.create(model="gpt-4o-mini", prompt="x", echo=True)
    # the upstream refused the gateway's own credentials: not the client's 401, and not worth a retry
    with pytest.raises(openai.InternalServerError) as failed:
        api.chat.completions.create(model="misconfigured", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502 and "model 'misconfigured'" in failed.value.message
    assert failed.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.AuthenticationError) as denied:  # the client's own bad key still is a 401
        client(gw, "sk-wrong").models.list()
    assert denied.value.response.headers["x-request-id"].startswith("req_")


def traced_model(gw: Gateway, trace_id: str) -> str:
    """The model recorded on a gateway call's trace (once the ingest queue has stored it)."""
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(f"{gw.server.base_url}/api/traces/{trace_id}", headers=gw.auth)
        if r.status_code == 200 or time.monotonic() > deadline:
            return str(r.json()["observations"][0]["model"])
        time.sleep(0.05)


def test_aliases_and_wildcard_routes(gw: Gateway) -> None:
    api = client(gw)
    listed = [m.id for m in api.models.list()]
    assert {"gpt-4", "fast", "up/*"} <= set(listed)
    hi: Any = [{"role": "user", "content": "hi"}]
    # a wildcard route calls the upstream model its * matched
    raw = api.chat.completions.with_raw_response.create(model="up/gpt-4.1", messages=hi)
    assert raw.parse().model == "gpt-4.1"
    assert traced_model(gw, raw.headers["x-pilothouse-trace-id"]) == "gpt-4.1"
    assert api.models.retrieve("up/o4-mini").id == "up/o4-mini"
    raw = api.chat.completions.with_raw_response.create(model="gpt-4", messages=hi)
    assert raw.parse().model == "gpt-4o-mini"
    assert traced_model(gw, raw.headers["x-pilothouse-trace-id"]) == "gpt-4o-mini"
    raw_response = api.responses.with_raw_response.create(model="fast", input="hi")
    assert raw_response.parse().model == "fast"  # the Responses API answers with the name asked for
    assert traced_model(gw, raw_response.headers["x-pilothouse-trace-id"]) == "gpt-4.1-nano"
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="down/gpt-4.1", messages=hi)


def test_rate_limit_reset_headers_and_cors(tmp_path: Path, upstream: SimulatedUpstream) -> None:
    models = [{"name": "sim", "provider": "sim", "model": "sim-1"}]
    origin = "https://app.example"
    gw = start_gateway(tmp_path, upstream, models, env={"PILOTHOUSE_CORS_ORIGINS": json.dumps([origin])})
    try:
        limited = gw.server.create_key("limited", rpm=100, tpm=100_000)
        raw = client(gw, limited).chat.completions.with_raw_response.create(
            model="sim", messages=[{"role": "user", "content": "hi"}]
        )
        for kind in ("requests", "tokens"):
            reset = raw.headers[f"x-ratelimit-reset-{kind}"]
            assert reset.endswith("s") and 1 <= int(reset[:-1]) <= 60
        url = gw.base_url + "/chat/completions"
        preflight = httpx.options(
            url,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
        body = {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(url, json=body, headers={**gw.auth, "Origin": origin})
        assert answer.headers["access-control-allow-origin"] == origin
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
        other = httpx.post(url, json=body, headers={**gw.auth, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        gw.server.stop()


def test_cors_is_off_by_default(gw: Gateway) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(
        gw.base_url + "/chat/completions", json=body, headers={**gw.auth, "Origin": "https://a.example"}
    )
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_pydantic_ai_responses_model(gw: Gateway) -> None:
    import pydantic_ai  # the test extra pins it
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=gw.base_url, api_key=gw.key)
    agent = pydantic_ai.Agent(OpenAIResponsesModel("gpt-4o-mini", provider=provider))
    calls: list[str] = []

    @agent.tool_plain
    def lookup(q: str) -> str:
        """Look something up."""
        calls.append(q)
        return "three cats"

    result = agent.run_sync("find cats")
    assert calls and result.output  # a function call, its output sent back, then the answer
    assert result.usage.input_tokens > 0

    plain = pydantic_ai.Agent(OpenAIResponsesModel("claude-haiku", provider=provider), tools=[])
    assert plain.run_sync("say hello").output


ODD_RESPONSES_BODIES: list[Any] = [
    [],
    {"model": 5, "input": "x"},
    {"model": "gpt-4o-mini", "input": [5]},
    {"model": "gpt-4o-mini", "input": [{"role": "robot", "content": "x"}]},
    {"model": "gpt-4o-mini", "input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]},
    {
        "model": "gpt-4o-mini",
        "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
    },
    {"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": "x"}]},
    {"model": "gpt-4o-mini", "input": [{"type": "function_call", "name": 5}]},
    {"model": "gpt-4o-mini", "input": [{"type": "function_call_output", "call_id": "c", "output": 5}]},
    {"model": "gpt-4o-mini", "input": "x", "tools": [{"type": "function"}]},
    {"model": "gpt-4o-mini", "input": "x", "tool_choice": {"type": "allowed_tools"}},
    {"model": "gpt-4o-mini", "input": "x", "text": {"format": {"type": "json_schema"}}},
    {"model": "gpt-4o-mini", "input": "x", "temperature": "hot"},
    {"model": "gpt-4o-mini", "input": "x", "stream": "yes"},
    {"model": "gpt-4o-mini", "input": "x", "previous_response_id": 5},
    {"model": "gpt-4o-mini", "input": "x", "metadata": [1]},
]


def test_odd_responses_requests_are_400_in_openai_shape(gw: Gateway) -> None:
    for body in ODD_RESPONSES_BODIES:
        r = httpx.post(gw.base_url + "/responses", json=body, headers=gw.auth)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["message"], body
    for body in (
        {"model": "gpt-4o-mini", "prompt": {"a": 1}},
        {"model": "gpt-4o-mini", "prompt": "x", "n": 0},
    ):
        r = httpx.post(gw.base_url + "/completions", json=body, headers=gw.auth)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", (body, r.text)


def test_anthropic_surface_has_its_request_id_and_retry_advice(gw: Gateway) -> None:
    claude = anthropic.Anthropic(base_url=gw.server.base_url, api_key=gw.key, max_retries=0)
    raw = claude.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().content and raw.request_id == "req_" + raw.headers["x-pilothouse-trace-id"]
    with pytest.raises(anthropic.InternalServerError) as failed:  # an upstream's 401 is not the client's
        claude.messages.create(
            model="misconfigured", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert failed.value.status_code == 502 and failed.value.response.headers["x-should-retry"] == "false"
    assert failed.value.request_id is not None
