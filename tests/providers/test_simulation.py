"""The simulated model (``pilothouse.testing.SimulatedUpstream`` and the ``sim`` provider): tool calls
that follow the tool's schema and ``tool_choice``, and JSON answers for ``response_format``, driven by
the official clients over loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pydantic
import pytest

from pilothouse.providers.base import Deployment
from pilothouse.providers.sim import SimProvider
from pilothouse.testing import SimulatedUpstream

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1},
                "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "hourly": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
ASK = [{"role": "user", "content": "weather in Paris please"}]


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    with SimulatedUpstream() as upstream:
        yield openai.OpenAI(base_url=upstream.base_url + "/v1", api_key="unused", max_retries=0)


def test_tool_arguments_fit_the_schema_and_tool_choice_is_followed(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER, TIME])  # type: ignore[list-item]
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert arguments == {"city": "weather in Paris", "days": 2, "units": "celsius", "hourly": True}
    assert reply.usage is not None and reply.usage.completion_tokens > 0  # the arguments are output
    named = {"type": "function", "function": {"name": "get_time"}}
    reply = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER, TIME], tool_choice=named)  # type: ignore[list-item,arg-type]
    assert reply.choices[0].message.tool_calls[0].function.name == "get_time"  # type: ignore[index,union-attr]
    reply = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="none")  # type: ignore[list-item]
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls


def test_a_tool_result_is_answered_in_words_unless_a_call_is_required(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER])  # type: ignore[list-item]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    loop: list[Any] = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"},
    ]
    answer = client.chat.completions.create(model="m", messages=loop, tools=[WEATHER])  # type: ignore[list-item]
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
    again = client.chat.completions.create(model="m", messages=loop, tools=[WEATHER], tool_choice="required")  # type: ignore[list-item]
    assert again.choices[0].finish_reason == "tool_calls"


def test_response_format_gets_json(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m", messages=ASK, response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content or "")["answer"], str)
    schema = {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "score": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    reply = client.chat.completions.create(model="m", messages=ASK, response_format=response_format)  # type: ignore[arg-type]
    value = json.loads(reply.choices[0].message.content or "")
    assert set(value) == {"summary", "score", "tags"} and value["score"] == 1.0
    assert isinstance(value["tags"], list) and isinstance(value["summary"], str)
    chunks = client.chat.completions.create(
        model="m", messages=ASK, response_format=response_format, stream=True
    )  # type: ignore[arg-type]
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == reply.choices[0].message.content
    )


def test_json_schema_with_definitions_fits_a_pydantic_model(client: openai.OpenAI) -> None:
    class Address(pydantic.BaseModel):
        city: str
        floor: int = pydantic.Field(ge=0, le=0)

    class Person(pydantic.BaseModel):
        name: str
        home: Address
        past: list[Address]

    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "p", "schema": Person.model_json_schema()},
    }
    reply = client.chat.completions.create(model="m", messages=ASK, response_format=response_format)  # type: ignore[arg-type]
    person = Person.model_validate_json(reply.choices[0].message.content or "")
    assert person.home.floor == 0 and len(person.past) == 1


def test_anthropic_tool_loop() -> None:
    tools = [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    with SimulatedUpstream() as upstream:
        client = anthropic.Anthropic(base_url=upstream.base_url, api_key="unused", max_retries=0)
        ask = [{"role": "user", "content": "find cats"}]
        first = client.messages.create(model="m", max_tokens=50, tools=tools, messages=ask)  # type: ignore[arg-type]
        use = first.content[0]
        assert first.stop_reason == "tool_use" and use.type == "tool_use" and use.input == {"q": "find cats"}
        result = {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "3 cats"}],
        }
        loop = [*ask, {"role": "assistant", "content": [use.model_dump()]}, result]
        answer = client.messages.create(model="m", max_tokens=50, tools=tools, messages=loop)  # type: ignore[arg-type]
        assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"


def test_the_sim_provider_follows_tool_choice_and_response_format() -> None:
    provider = SimProvider(Deployment("sim", "sim", "sim-1"))
    request = {"model": "sim", "messages": ASK, "tools": [WEATHER], "tool_choice": "none"}
    reply = asyncio.run(provider.chat(request))
    assert reply["choices"][0]["message"]["content"]
    request = {"model": "sim", "messages": ASK, "response_format": {"type": "json_object"}}
    reply = asyncio.run(provider.chat(request))
    assert "answer" in json.loads(reply["choices"][0]["message"]["content"])
