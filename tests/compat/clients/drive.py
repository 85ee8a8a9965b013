"""Drive one real client package against the gateway on loopback and print what worked, as JSON.

    <venv>/bin/python tests/compat/clients/drive.py <client> --gateway http://127.0.0.1:PORT --key K \
        --limited-key L

Runs in the client's own virtualenv (tests/compat/clients/requirements-*.txt), so it imports only the
standard library and the client package. Every feature of FEATURES is tried with the client's own API
(nothing hand-built): the result is ``{"versions": {...}, "cells": {feature: "OK" | "n.a.: why" |
"FAIL: what"}}``. The gateway serves ``gpt-4o-mini`` and ``text-embedding-3-small`` (OpenAI deployments)
and ``claude-sonnet-4-5`` (an Anthropic deployment), all over simulated upstreams. ``--limited-key`` is
a key with one request a minute (the 429 check); an unknown key gets the 401."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

FEATURES = [
    "chat", "stream", "tools", "json", "embeddings", "errors", "responses", "messages",
    "local-json", "local-n",
]  # fmt: skip
GPT, CLAUDE, EMBED = "gpt-4o-mini", "claude-sonnet-4-5", "text-embedding-3-small"
LOCAL = "smollm2"  # the real local model (SmolLM2-135M-Instruct), in the gateway's process
HELLO = "Say hello to the compatibility suite."
CITY_ASK = "Name the capital of France, as JSON."
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


class NA(Exception):
    """A feature the client does not have (the message says why)."""


def check(condition: object, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def errors_raised(
    calls: dict[int, Callable[[], object]], expected: dict[int, type], wrapper: type | None = None
) -> None:
    """Each call fails with the expected exception class (the SDK's own for that status), or with
    ``wrapper`` (a library that wraps what its SDK raised, e.g. instructor) caused by it."""
    for status, call in calls.items():
        try:
            call()
            if status == 429:
                call()  # the limited key's one request a minute may be left: the second is refused
        except Exception as exc:
            if isinstance(exc, expected[status]):
                continue
            if (
                wrapper is not None
                and isinstance(exc, wrapper)
                and isinstance(exc.__cause__, expected[status])
            ):
                continue
            raise AssertionError(
                f"{status} raised {type(exc).__module__}.{type(exc).__name__}: {exc}"
            ) from exc
        raise AssertionError(f"{status}: no exception")


# -- openai (Python) -------------------------------------------------------------------------------


def openai_python(a: argparse.Namespace) -> dict[str, Callable[[], None]]:
    import openai
    from pydantic import BaseModel

    client = openai.OpenAI(base_url=a.gateway + "/v1", api_key=a.key, max_retries=0)

    class City(BaseModel):
        city: str

    def chat() -> None:
        r = client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": HELLO}])
        check(r.choices[0].message.content and r.usage and r.usage.total_tokens > 0, "answer and usage")

    def stream() -> None:
        parts = [
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model=GPT, messages=[{"role": "user", "content": HELLO}], stream=True
            )
            if c.choices
        ]
        check("".join(parts), "streamed text")

    def tools() -> None:
        r = client.chat.completions.create(
            model=GPT,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}],
            tool_choice="required",
        )
        call = r.choices[0].message.tool_calls[0]
        check(call.function.name == "get_weather" and "city" in json.loads(call.function.arguments), "call")

    def structured() -> None:
        r = client.chat.completions.parse(
            model=GPT, messages=[{"role": "user", "content": "Name a city."}], response_format=City
        )
        check(isinstance(r.choices[0].message.parsed, City), "parsed City")

    def embeddings() -> None:
        r = client.embeddings.create(model=EMBED, input=["one", "two"])
        check(len(r.data) == 2 and len(r.data[0].embedding) > 0, "two vectors")

    def errors() -> None:
        bad = openai.OpenAI(base_url=a.gateway + "/v1", api_key="sk-not-a-key", max_retries=0)
        limited = openai.OpenAI(base_url=a.gateway + "/v1", api_key=a.limited_key, max_retries=0)
        msgs = [{"role": "user", "content": HELLO}]
        errors_raised(
            {
                400: lambda: client.chat.completions.create(model=GPT, messages=msgs, temperature=5),
                401: lambda: bad.chat.completions.create(model=GPT, messages=msgs),
                429: lambda: limited.chat.completions.create(model=GPT, messages=msgs),
            },
            {400: openai.BadRequestError, 401: openai.AuthenticationError, 429: openai.RateLimitError},
        )

    def responses() -> None:
        r = client.responses.create(model=GPT, input=HELLO)
        check(r.output_text and r.usage and r.usage.output_tokens > 0, "output_text and usage")
        events = [e.type for e in client.responses.create(model=GPT, input=HELLO, stream=True)]
        check("response.completed" in events, "response.completed event")
        follow = client.responses.create(model=GPT, input="And again.", previous_response_id=r.id)
        check(follow.output_text, "previous_response_id")

    def messages() -> None:
        raise NA("the openai client has no Messages API")

    def local_json() -> None:
        ask = [{"role": "user", "content": CITY_ASK}]
        r = client.chat.completions.parse(model=LOCAL, messages=ask, response_format=City, max_tokens=48)
        check(isinstance(r.choices[0].message.parsed, City), "parsed City")

    def local_n() -> None:
        hello = [{"role": "user", "content": HELLO}]
        r = client.chat.completions.create(model=LOCAL, messages=hello, n=2, max_tokens=8)
        check([c.index for c in r.choices] == [0, 1] and r.usage and r.usage.completion_tokens > 0, "n=2")

    return {
        "chat": chat,
        "stream": stream,
        "tools": tools,
        "json": structured,
        "embeddings": embeddings,
        "errors": errors,
        "responses": responses,
        "messages": messages,
        "local-json": local_json,
        "local-n": local_n,
    }


# -- anthropic -------------------------------------------------------------------------------------


def anthropic_python(a: argparse.Namespace) -> dict[str, Callable[[], None]]:
    import anthropic
    from pydantic import BaseModel

    class City(BaseModel):
        city: str

    client = anthropic.Anthropic(base_url=a.gateway, api_key=a.key, max_retries=0)
    hello = [{"role": "user", "content": HELLO}]

    def chat() -> None:
        for model in (CLAUDE, GPT):  # native pass-through, and translated to an OpenAI deployment
            r = client.messages.create(model=model, max_tokens=64, messages=hello)
            check(r.content[0].text and r.usage.output_tokens > 0, f"{model}: text and usage")

    def stream() -> None:
        for model in (CLAUDE, GPT):
            with client.messages.stream(model=model, max_tokens=64, messages=hello) as s:
                text = "".join(s.text_stream)
                final = s.get_final_message()
            check(text and final.usage.output_tokens > 0, f"{model}: streamed text")

    def tools() -> None:
        for model in (CLAUDE, GPT):
            r = client.messages.create(
                model=model,
                max_tokens=64,
                messages=[{"role": "user", "content": "Weather in Paris?"}],
                tools=[{"name": "get_weather", "description": "weather", "input_schema": WEATHER_SCHEMA}],
                tool_choice={"type": "any"},
            )
            uses = [b for b in r.content if b.type == "tool_use"]
            check(uses and uses[0].name == "get_weather" and "city" in uses[0].input, f"{model}: tool_use")

    def structured() -> None:
        for model in (CLAUDE, GPT):  # output_config.format: json_schema (structured outputs)
            ask = [{"role": "user", "content": "Name a city."}]
            r = client.messages.parse(model=model, max_tokens=64, messages=ask, output_format=City)
            check(isinstance(r.parsed_output, City), f"{model}: parsed City")

    def embeddings() -> None:
        raise NA("Anthropic has no embeddings API")

    def errors() -> None:
        bad = anthropic.Anthropic(base_url=a.gateway, api_key="sk-not-a-key", max_retries=0)
        limited = anthropic.Anthropic(base_url=a.gateway, api_key=a.limited_key, max_retries=0)
        errors_raised(
            {
                400: lambda: client.messages.create(model=CLAUDE, max_tokens=-1, messages=hello),
                401: lambda: bad.messages.create(model=CLAUDE, max_tokens=64, messages=hello),
                429: lambda: limited.messages.create(model=CLAUDE, max_tokens=64, messages=hello),
            },
            {
                400: anthropic.BadRequestError,
                401: anthropic.AuthenticationError,
                429: anthropic.RateLimitError,
            },
        )

    def responses() -> None:
        raise NA("the anthropic client has no Responses API")

    def messages() -> None:
        counted = client.messages.count_tokens(model=CLAUDE, messages=hello)
        check(counted.input_tokens > 0, "count_tokens")
        models = client.models.list()
        check(any(m.id == CLAUDE for m in models), "model list in Anthropic's shape")

    def local_json() -> None:  # output_config.format, translated to response_format
        ask = [{"role": "user", "content": CITY_ASK}]
        r = client.messages.parse(model=LOCAL, max_tokens=48, messages=ask, output_format=City)
        check(isinstance(r.parsed_output, City), "parsed City")

    def local_n() -> None:
        raise NA("Anthropic's Messages API has no n (one answer per request)")

    return {
        "chat": chat,
        "stream": stream,
        "tools": tools,
        "json": structured,
        "embeddings": embeddings,
        "errors": errors,
        "responses": responses,
        "messages": messages,
        "local-json": local_json,
        "local-n": local_n,
    }


# -- LangChain -------------------------------------------------------------------------------------


def langchain_openai(a: argparse.Namespace) -> dict[str, Callable[[], None]]:
    import openai
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings
    from pydantic import BaseModel

    def llm(**kw: Any) -> Any:
        return ChatOpenAI(model=GPT, base_url=a.gateway + "/v1", api_key=a.key, max_retries=0, **kw)

    class City(BaseModel):
        city: str

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    def chat() -> None:
        r = llm().invoke(HELLO)
        check(r.content and r.usage_metadata and r.usage_metadata["total_tokens"] > 0, "text and usage")

    def stream() -> None:
        check("".join(str(c.content) for c in llm(stream_usage=True).stream(HELLO)), "streamed text")

    def tools() -> None:
        r = llm().bind_tools([get_weather], tool_choice="required").invoke("Weather in Paris?")
        check(r.tool_calls and r.tool_calls[0]["name"] == "get_weather", "tool call")

    def structured() -> None:
        prompt = "Name a city, as JSON with the key city."
        for method in ("json_schema", "function_calling"):
            out = llm().with_structured_output(City, method=method).invoke(prompt)
            check(isinstance(out, City), f"{method}: City")
        # json_mode (response_format json_object) asks only for JSON: the schema is in the prompt, which
        # the simulated upstream does not read; the answer must be a JSON object
        raw = llm().with_structured_output(City, method="json_mode", include_raw=True).invoke(prompt)["raw"]
        check(isinstance(json.loads(raw.content), dict), "json_mode: a JSON object")

    def embeddings() -> None:
        # its default sends token-id arrays (tiktoken), not text. Nothing leaves loopback: tiktoken's
        # cl100k_base file is taken from llama-index-core (same venv), which ships it
        import llama_index.core

        cache = Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache"
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache))
        emb = OpenAIEmbeddings(model=EMBED, base_url=a.gateway + "/v1", api_key=a.key, max_retries=0)
        check(len(emb.embed_documents(["one", "two"])) == 2 and emb.embed_query("three"), "vectors")

    def errors() -> None:
        bad = ChatOpenAI(model=GPT, base_url=a.gateway + "/v1", api_key="sk-not-a-key", max_retries=0)
        limited = ChatOpenAI(model=GPT, base_url=a.gateway + "/v1", api_key=a.limited_key, max_retries=0)
        errors_raised(
            {
                400: lambda: llm(temperature=5).invoke(HELLO),
                401: lambda: bad.invoke(HELLO),
                429: lambda: limited.invoke(HELLO),
            },
            {400: openai.BadRequestError, 401: openai.AuthenticationError, 429: openai.RateLimitError},
        )

    def responses() -> None:
        r = llm(use_responses_api=True).invoke(HELLO)
        check(r.text and r.usage_metadata, "Responses API answer")
        check("".join(c.text for c in llm(use_responses_api=True).stream(HELLO)), "Responses API stream")

    def messages() -> None:
        raise NA("langchain-openai speaks OpenAI's API (langchain-anthropic: next row)")

    def local_json() -> None:
        chat = ChatOpenAI(
            model=LOCAL, base_url=a.gateway + "/v1", api_key=a.key, max_retries=0, max_tokens=48
        )
        out = chat.with_structured_output(City, method="json_schema").invoke(CITY_ASK)
        check(isinstance(out, City), "json_schema: City")

    def local_n() -> None:
        from langchain_core.messages import HumanMessage

        chat = ChatOpenAI(
            model=LOCAL, base_url=a.gateway + "/v1", api_key=a.key, max_retries=0, max_tokens=8, n=2
        )
        generations = chat.generate([[HumanMessage(HELLO)]]).generations[0]
        check(len(generations) == 2 and all(g.text for g in generations), "two generations")

    return {
        "chat": chat,
        "stream": stream,
        "tools": tools,
        "json": structured,
        "embeddings": embeddings,
        "errors": errors,
        "responses": responses,
        "messages": messages,
        "local-json": local_json,
        "local-n": local_n,
    }


def langchain_anthropic(a: argparse.Namespace) -> dict[str, Callable[[], None]]:
    import anthropic
    from langchain_anthropic import ChatAnthropic
    from langchain_core.tools import tool
    from pydantic import BaseModel

    def llm(key: str | None = None, **kw: Any) -> Any:
        return ChatAnthropic(
            model=CLAUDE, base_url=a.gateway, api_key=key or a.key, max_retries=0, max_tokens=64, **kw
        )

    class City(BaseModel):
        city: str

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    def chat() -> None:
        r = llm().invoke(HELLO)
        check(r.content and r.usage_metadata and r.usage_metadata["total_tokens"] > 0, "text and usage")

    def stream() -> None:
        check(
            "".join(str(c.content) if isinstance(c.content, str) else c.text for c in llm().stream(HELLO)),
            "text",
        )

    def tools() -> None:
        r = llm().bind_tools([get_weather], tool_choice="any").invoke("Weather in Paris?")
        check(r.tool_calls and r.tool_calls[0]["name"] == "get_weather", "tool call")

    def structured() -> None:
        out = llm().with_structured_output(City).invoke("Name a city.")
        check(isinstance(out, City), "City (by a forced tool)")

    def embeddings() -> None:
        raise NA("Anthropic has no embeddings API")

    def errors() -> None:
        errors_raised(
            {
                400: lambda: llm(temperature=5).invoke(HELLO),
                401: lambda: llm("sk-not-a-key").invoke(HELLO),
                429: lambda: llm(a.limited_key).invoke(HELLO),
            },
            {
                400: anthropic.BadRequestError,
                401: anthropic.AuthenticationError,
                429: anthropic.RateLimitError,
            },
        )

    def responses() -> None:
        raise NA("Anthropic clients have no Responses API")

    def messages() -> None:
        r = ChatAnthropic(model=GPT, base_url=a.gateway, api_key=a.key, max_retries=0, max_tokens=64).invoke(
            HELLO
        )
        check(r.content, "/v1/messages translated to an OpenAI deployment")

    def local_json() -> None:  # output_config.format, translated to response_format
        chat = ChatAnthropic(model=LOCAL, base_url=a.gateway, api_key=a.key, max_retries=0, max_tokens=48)
        out = chat.with_structured_output(City, method="json_schema").invoke(CITY_ASK)
        check(isinstance(out, City), "json_schema: City")

    def local_n() -> None:
        raise NA("Anthropic's Messages API has no n (one answer per request)")

    return {
        "chat": chat,
        "stream": stream,
        "tools": tools,
        "json": structured,
        "embeddings": embeddings,
        "errors": errors,
        "responses": responses,
        "messages": messages,
        "local-json": local_json,
        "local-n": local_n,
    }


# -- LlamaIndex ------------------------------------------------------------------------------------


def llama_index(a: argparse.Namespace) -> dict[str, Callable[[], None]]:
    import openai
    from llama_index.core.llms import ChatMessage
    from llama_index.core.tools import FunctionTool
    from llama_index.llms.openai import OpenAI, OpenAIResponses
    from pydantic import BaseModel

    def llm(key: str | None = None, **kw: Any) -> Any:
        return OpenAI(model=GPT, api_base=a.gateway + "/v1", api_key=key or a.key, max_retries=0, **kw)

    hello = [ChatMessage(role="user", content=HELLO)]

    class City(BaseModel):
        city: str

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    def chat() -> None:
        r = llm().chat(hello)
        check(r.message.content, "text")

    def stream() -> None:
        check("".join(c.delta or "" for c in llm().stream_chat(hello)), "streamed text")

    def tools() -> None:
        weather = FunctionTool.from_defaults(fn=get_weather)
        r = llm().chat_with_tools([weather], user_msg="Weather in Paris?", tool_required=True)
        calls = llm().get_tool_calls_from_response(r, error_on_no_tool_call=True)
        check(calls[0].tool_name == "get_weather" and "city" in calls[0].tool_kwargs, "tool call")

    def structured() -> None:
        out = llm().as_structured_llm(City).chat([ChatMessage(role="user", content="Name a city.")])
        check(isinstance(out.raw, City), "City")

    def embeddings() -> None:
        raise NA("a separate package (llama-index-embeddings-openai), not this one")

    def errors() -> None:
        errors_raised(
            # (it checks temperature itself: top_p 5 reaches the gateway)
            {
                400: lambda: llm(additional_kwargs={"top_p": 5}).chat(hello),
                401: lambda: llm("sk-not-a-key").chat(hello),
                429: lambda: llm(a.limited_key).chat(hello),
            },
            {400: openai.BadRequestError, 401: openai.AuthenticationError, 429: openai.RateLimitError},
        )

    def responses() -> None:
        r = OpenAIResponses(model=GPT, api_base=a.gateway + "/v1", api_key=a.key, max_retries=0).chat(hello)
        check(r.message.content, "Responses API answer")

    def messages() -> None:
        raise NA("llama-index-llms-openai speaks OpenAI's API")

    def local_json() -> None:
        raise NA(
            "llama-index-llms-openai's OpenAI takes OpenAI model names only (it refuses 'smollm2' itself); "
            "a deployment named like an OpenAI model would do"
        )

    def local_n() -> None:
        raise NA("llama-index reads one choice per call (no n)")

    return {
        "chat": chat,
        "stream": stream,
        "tools": tools,
        "json": structured,
        "embeddings": embeddings,
        "errors": errors,
        "responses": responses,
        "messages": messages,
        "local-json": local_json,
        "local-n": local_n,
    }


# -- LiteLLM ---------------------------------------------------------------------------------------


def litellm_sdk(a: argparse.Namespace) -> dict[str, Callable[[], None]]:
    import litellm

    base = {"api_base": a.gateway + "/v1", "api_key": a.key, "num_retries": 0}
    hello = [{"role": "user", "content": HELLO}]

    def chat() -> None:
        r = litellm.completion(model="openai/" + GPT, messages=hello, **base)
        check(r.choices[0].message.content and r.usage.total_tokens > 0, "text and usage")

    def stream() -> None:
        chunks = litellm.completion(model="openai/" + GPT, messages=hello, stream=True, **base)
        check("".join(c.choices[0].delta.content or "" for c in chunks if c.choices), "streamed text")

    def tools() -> None:
        r = litellm.completion(
            model="openai/" + GPT,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}],
            tool_choice="required",
            **base,
        )
        check(r.choices[0].message.tool_calls[0].function.name == "get_weather", "tool call")

    def structured() -> None:
        fmt = {
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": WEATHER_SCHEMA, "strict": True},
        }
        r = litellm.completion(model="openai/" + GPT, messages=hello, response_format=fmt, **base)
        check("city" in json.loads(r.choices[0].message.content), "JSON with city")

    def embeddings() -> None:
        r = litellm.embedding(model="openai/" + EMBED, input=["one", "two"], **base)
        check(len(r.data) == 2, "two vectors")

    def errors() -> None:
        bad = {**base, "api_key": "sk-not-a-key"}
        limited = {**base, "api_key": a.limited_key}
        model = "openai/" + GPT
        errors_raised(
            {
                400: lambda: litellm.completion(model=model, messages=hello, temperature=5, **base),
                401: lambda: litellm.completion(model=model, messages=hello, **bad),
                429: lambda: litellm.completion(model=model, messages=hello, **limited),
            },
            {400: litellm.BadRequestError, 401: litellm.AuthenticationError, 429: litellm.RateLimitError},
        )

    def responses() -> None:
        r = litellm.responses(model="openai/" + GPT, input=HELLO, **base)
        check(r.output and r.usage, "Responses API answer")

    def messages() -> None:
        r = litellm.completion(
            model="anthropic/" + CLAUDE, messages=hello, api_base=a.gateway, api_key=a.key, max_tokens=64
        )
        check(r.choices[0].message.content, "Anthropic route (/v1/messages)")

    def local_json() -> None:
        fmt = {
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": WEATHER_SCHEMA, "strict": True},
        }
        ask = [{"role": "user", "content": CITY_ASK}]
        r = litellm.completion(
            model="openai/" + LOCAL, messages=ask, response_format=fmt, max_tokens=48, **base
        )
        check(isinstance(json.loads(r.choices[0].message.content)["city"], str), "JSON with city")

    def local_n() -> None:
        r = litellm.completion(model="openai/" + LOCAL, messages=hello, n=2, max_tokens=8, **base)
        check(len(r.choices) == 2 and all(c.message.content for c in r.choices), "two choices")

    return {
        "chat": chat,
        "stream": stream,
        "tools": tools,
        "json": structured,
        "embeddings": embeddings,
        "errors": errors,
        "responses": responses,
        "messages": messages,
        "local-json": local_json,
        "local-n": local_n,
    }


# -- instructor ------------------------------------------------------------------------------------


def instructor_sdk(a: argparse.Namespace) -> dict[str, Callable[[], None]]:
    import anthropic
    import instructor
    import openai
    from instructor.core.exceptions import InstructorRetryException
    from pydantic import BaseModel

    class City(BaseModel):
        city: str

    def client(mode: Any = None, key: str | None = None) -> Any:
        raw = openai.OpenAI(base_url=a.gateway + "/v1", api_key=key or a.key, max_retries=0)
        return instructor.from_openai(raw, mode=mode) if mode else instructor.from_openai(raw)

    ask = [{"role": "user", "content": "Name a city."}]

    def chat() -> None:
        raise NA("instructor is for structured output (the json cell); chat is the openai client's")

    def stream() -> None:
        parts = list(client().create_partial(model=GPT, messages=ask, response_model=City))
        check(parts and parts[-1].city, "partial objects streamed")

    def tools() -> None:
        out = client(instructor.Mode.TOOLS).create(model=GPT, messages=ask, response_model=City)
        check(out.city, "City by a tool call")

    def structured() -> None:
        # (Mode.JSON and MD_JSON put the schema in the prompt only, which the simulated upstream does
        # not read: a real model follows it; the gateway passes json_object on like any parameter)
        for mode in (instructor.Mode.JSON_SCHEMA, instructor.Mode.TOOLS_STRICT):
            out = client(mode).create(model=GPT, messages=ask, response_model=City)
            check(out.city, f"{mode}: City")

    def embeddings() -> None:
        raise NA("instructor has no embeddings")

    def errors() -> None:
        def make(key: str | None, **kw: Any) -> Callable[[], object]:
            return lambda: client(None, key).create(
                model=GPT, messages=ask, response_model=City, max_retries=0, **kw
            )

        # instructor raises InstructorRetryException, caused by the openai client's own exception
        errors_raised(
            {400: make(None, temperature=5), 401: make("sk-not-a-key"), 429: make(a.limited_key)},
            {400: openai.BadRequestError, 401: openai.AuthenticationError, 429: openai.RateLimitError},
            wrapper=InstructorRetryException,
        )

    def responses() -> None:
        raise NA("instructor's OpenAI modes use chat completions")

    def messages() -> None:
        raw = anthropic.Anthropic(base_url=a.gateway, api_key=a.key, max_retries=0)
        out = instructor.from_anthropic(raw).create(
            model=CLAUDE, max_tokens=64, messages=ask, response_model=City
        )
        check(out.city, "City over /v1/messages")

    def local_json() -> None:
        ask_city = [{"role": "user", "content": CITY_ASK}]
        out = client(instructor.Mode.JSON_SCHEMA).create(
            model=LOCAL, messages=ask_city, response_model=City, max_tokens=48, max_retries=0
        )
        check(isinstance(out, City), "JSON_SCHEMA: City")

    def local_n() -> None:
        raise NA("instructor validates one answer per call (no n)")

    return {
        "chat": chat,
        "stream": stream,
        "tools": tools,
        "json": structured,
        "embeddings": embeddings,
        "errors": errors,
        "responses": responses,
        "messages": messages,
        "local-json": local_json,
        "local-n": local_n,
    }


# -- pydantic-ai -----------------------------------------------------------------------------------


def pydantic_ai(a: argparse.Namespace) -> dict[str, Callable[[], None]]:
    from pydantic import BaseModel
    from pydantic_ai import Agent
    from pydantic_ai.exceptions import ModelHTTPError
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    def provider(key: str | None = None) -> Any:
        import openai

        return OpenAIProvider(
            openai_client=openai.AsyncOpenAI(base_url=a.gateway + "/v1", api_key=key or a.key, max_retries=0)
        )

    def model(key: str | None = None) -> Any:
        return OpenAIChatModel(GPT, provider=provider(key))

    class City(BaseModel):
        city: str

    def chat() -> None:
        r = Agent(model()).run_sync(HELLO)
        check(r.output and r.usage.output_tokens > 0, "text and usage")

    def stream() -> None:
        async def go() -> str:
            async with Agent(model()).run_stream(HELLO) as s:
                return "".join([t async for t in s.stream_text(delta=True)])

        check(asyncio.run(go()), "streamed text")

    def tools() -> None:
        agent = Agent(model())
        used: list[str] = []

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """The weather in a city."""
            used.append(city)
            return "sunny"

        r = agent.run_sync("Weather in Paris? Use the tool.")
        check(used and r.output, "tool called and answered")

    def structured() -> None:
        r = Agent(model(), output_type=City).run_sync("Name a city.")
        check(isinstance(r.output, City), "City")

    def embeddings() -> None:
        raise NA("pydantic-ai 2.68 agents have no embeddings API")

    def errors() -> None:
        def status_of(call: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                try:
                    return call()
                except ModelHTTPError as exc:
                    raise _Status(exc.status_code) from exc

            return run

        seen: dict[int, int] = {}
        for status, call in {
            400: lambda: Agent(model(), model_settings={"temperature": 5}).run_sync(HELLO),
            401: lambda: Agent(model("sk-not-a-key")).run_sync(HELLO),
            429: lambda: [Agent(model(a.limited_key)).run_sync(HELLO) for _ in range(2)],
        }.items():
            try:
                status_of(call)()
            except _Status as exc:
                seen[status] = exc.status
        check(seen == {400: 400, 401: 401, 429: 429}, f"ModelHTTPError statuses {seen}")

    def responses() -> None:
        r = Agent(OpenAIResponsesModel(GPT, provider=provider())).run_sync(HELLO)
        check(r.output, "Responses API answer")

    def messages() -> None:
        import anthropic
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        raw = anthropic.AsyncAnthropic(base_url=a.gateway, api_key=a.key, max_retries=0)
        r = Agent(AnthropicModel(CLAUDE, provider=AnthropicProvider(anthropic_client=raw))).run_sync(HELLO)
        check(r.output, "AnthropicModel over /v1/messages")

    def local_json() -> None:
        from pydantic_ai import NativeOutput

        agent = Agent(OpenAIChatModel(LOCAL, provider=provider()), output_type=NativeOutput(City))
        r = agent.run_sync(CITY_ASK, model_settings={"max_tokens": 48})
        check(isinstance(r.output, City), "NativeOutput: City")

    def local_n() -> None:
        raise NA("pydantic-ai asks for one choice per model request (no n)")

    return {
        "chat": chat,
        "stream": stream,
        "tools": tools,
        "json": structured,
        "embeddings": embeddings,
        "errors": errors,
        "responses": responses,
        "messages": messages,
        "local-json": local_json,
        "local-n": local_n,
    }


class _Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


CLIENTS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Callable[[], None]]], list[str]]] = {
    "openai": (openai_python, ["openai"]),
    "anthropic": (anthropic_python, ["anthropic"]),
    "langchain-openai": (langchain_openai, ["langchain-openai", "langchain-core", "openai"]),
    "langchain-anthropic": (langchain_anthropic, ["langchain-anthropic", "langchain-core", "anthropic"]),
    "llama-index": (llama_index, ["llama-index-llms-openai", "llama-index-core", "openai"]),
    "litellm": (litellm_sdk, ["litellm"]),
    "instructor": (instructor_sdk, ["instructor", "openai", "anthropic"]),
    "pydantic-ai": (pydantic_ai, ["pydantic-ai-slim", "openai", "anthropic"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--limited-key", required=True)
    parser.add_argument("--only", nargs="*", default=FEATURES)
    a = parser.parse_args()
    build, packages = CLIENTS[a.client]
    versions = {p: importlib.metadata.version(p) for p in packages}
    cells: dict[str, str] = {}
    for feature, run in build(a).items():
        if feature not in a.only:
            continue
        try:
            run()
            cells[feature] = "OK"
        except NA as exc:
            cells[feature] = f"n.a.: {exc}"
        except Exception as exc:
            tb = traceback.format_exc(limit=-3)
            cells[feature] = f"FAIL: {type(exc).__name__}: {exc}"[:600]
            print(f"--- {a.client} {feature}\n{tb}", file=sys.stderr)
    json.dump({"versions": versions, "cells": cells}, sys.stdout)


if __name__ == "__main__":
    main()
