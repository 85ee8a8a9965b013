"""instrument_openai() and instrument_anthropic() against the simulated upstream over loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

import pilothouse
from pilothouse.domain.traces import ObservationKind, Status
from pilothouse.testing import InMemoryExporter, SimulatedUpstream
from tests.sdk.conftest import observations

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "one two three four five six"},
]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.fixture
def instrumented(exporter: InMemoryExporter) -> Iterator[InMemoryExporter]:
    pilothouse.instrument_openai()
    pilothouse.instrument_anthropic()
    yield exporter
    pilothouse.uninstrument_openai()
    pilothouse.uninstrument_anthropic()


def test_openai_chat_stream_tools_embeddings_errors(
    instrumented: InMemoryExporter, upstream: SimulatedUpstream
) -> None:
    client = openai.OpenAI(base_url=upstream.base_url + "/v1", api_key="sk-test", max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=0.2, max_tokens=5
    )
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    tool = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]
    client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fail-model", messages=MESSAGES)

    obs = observations(instrumented)
    assert len(obs) == 5
    plain, streamed_obs, tool_obs, emb, failed = obs
    assert plain.kind is ObservationKind.GENERATION and plain.model == "gpt-4o-mini"
    assert plain.provider == "openai"
    # 8 prompt words, half reported cached: 4 cached, 4 uncached; 5 words + 3 reasoning tokens out
    assert (plain.usage.input, plain.usage.cache_read, plain.usage.output, plain.usage.reasoning) == (
        4,
        4,
        8,
        3,
    )
    assert plain.output == reply.choices[0].message.content
    assert plain.model_parameters["temperature"] == 0.2 and plain.model_parameters["max_tokens"] == 5
    assert json.loads(plain.input or "")[1]["content"] == MESSAGES[1]["content"]
    assert streamed_obs.output == streamed and streamed_obs.usage.input_total == 8
    assert streamed_obs.ttft_ns is not None and 0 < streamed_obs.ttft_ns <= streamed_obs.duration_ns
    assert tool.choices[0].message.tool_calls
    assert json.loads(tool_obs.output or "")["tool_calls"][0]["function"]["name"] == "lookup"
    assert emb.kind is ObservationKind.EMBEDDING and emb.usage.input == 3
    assert failed.status is Status.ERROR and "InternalServerError" in (failed.status_message or "")
    # each call told the upstream which span it belongs to (W3C traceparent)
    traceparents = [h.get("traceparent", "") for h in upstream.request_headers[-5:]]
    assert [tp.split("-")[2] for tp in traceparents] == [o.id for o in obs]
    assert all(tp.split("-")[1] == o.trace_id for tp, o in zip(traceparents, obs, strict=True))


def test_trace_headers_carry_the_current_span(exporter: InMemoryExporter) -> None:
    assert pilothouse.trace_headers() == {}
    with pilothouse.span("outer") as s:
        header = pilothouse.trace_headers()["traceparent"]
        assert header.split("-")[1:3] == [s.trace_id, s.id]


def test_openai_async_stream(instrumented: InMemoryExporter, upstream: SimulatedUpstream) -> None:
    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=upstream.base_url + "/v1", api_key="sk-test")
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    text = asyncio.run(run())
    (obs,) = observations(instrumented)
    assert obs.output == text and obs.ttft_ns is not None


def test_anthropic_messages_and_stream(instrumented: InMemoryExporter, upstream: SimulatedUpstream) -> None:
    client = anthropic.Anthropic(base_url=upstream.base_url, api_key="sk-ant-test", max_retries=0)
    msg = client.messages.create(
        model="claude-haiku",
        max_tokens=50,
        system="be brief",
        messages=[{"role": "user", "content": "one two three four five six"}],
    )
    stream = client.messages.create(
        model="claude-haiku",
        max_tokens=50,
        stream=True,
        messages=[{"role": "user", "content": "one two three four five six"}],
    )
    text = "".join(
        e.delta.text for e in stream if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    plain, streamed = observations(instrumented)
    # Anthropic reports input_tokens without cache reads; the stored usage counts each token once.
    usage = msg.usage
    assert plain.usage.input == usage.input_tokens and plain.usage.cache_read == usage.cache_read_input_tokens
    assert plain.usage.output == usage.output_tokens
    assert plain.output == msg.content[0].text  # type: ignore[union-attr]
    assert json.loads(plain.input or "")[0] == {"role": "system", "content": "be brief"}
    assert streamed.output == text and streamed.ttft_ns is not None
    assert streamed.usage.input_total == 6


def test_anthropic_stream_helper(instrumented: InMemoryExporter, upstream: SimulatedUpstream) -> None:
    client = anthropic.Anthropic(base_url=upstream.base_url, api_key="sk-ant-test", max_retries=0)
    question = [{"role": "user", "content": "one two three four five six"}]
    with client.messages.stream(model="claude-haiku", max_tokens=50, messages=question) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
    with client.messages.stream(model="claude-haiku", max_tokens=50, messages=question) as stream:  # type: ignore[arg-type]
        next(iter(stream))  # left early: the call still ends, with what arrived

    async def run() -> str:
        aclient = anthropic.AsyncAnthropic(base_url=upstream.base_url, api_key="sk-ant-test", max_retries=0)
        async with aclient.messages.stream(model="claude-haiku", max_tokens=50, messages=question) as s:  # type: ignore[arg-type]
            return "".join([t async for t in s.text_stream])

    assert asyncio.run(run()) == text
    full, early, from_async = observations(instrumented)
    assert full.output == text and full.usage.input_total == 6 and full.ttft_ns is not None
    assert from_async.output == text
    assert early.model == "claude-haiku" and early.end_ns >= early.start_ns


def test_raw_and_streaming_responses_are_traced_and_returned_unchanged(
    instrumented: InMemoryExporter, upstream: SimulatedUpstream
) -> None:
    # `with_raw_response` (the gateway's docs read x-pilothouse-trace-id with it) made the instrumented
    # create() crash with "'LegacyAPIResponse' object has no attribute 'get'", failing the user's call
    client = openai.OpenAI(base_url=upstream.base_url + "/v1", api_key="sk-test", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    reply = raw.parse()
    assert raw.headers["content-type"].startswith("application/json") and reply.choices[0].message.content
    raw_stream = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in raw_stream.parse() if c.choices)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as lazy:  # type: ignore[arg-type]
        lazy_reply = lazy.parse()
    raw_embedding = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="a b")
    assert len(raw_embedding.parse().data) == 1

    claude = anthropic.Anthropic(base_url=upstream.base_url, api_key="sk-test", max_retries=0)
    raw_message = claude.messages.with_raw_response.create(
        model="claude-haiku-4-5",
        max_tokens=20,
        messages=[{"role": "user", "content": "one two three"}],
    )
    message = raw_message.parse()

    async def async_raw() -> str:
        aclient = openai.AsyncOpenAI(base_url=upstream.base_url + "/v1", api_key="sk-test", max_retries=0)
        answer = await aclient.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        )  # type: ignore[arg-type]
        return answer.parse().choices[0].message.content or ""

    async_text = asyncio.run(async_raw())

    obs = observations(instrumented)
    assert len(obs) == 6 and all(o.status is not Status.ERROR for o in obs)
    plain, raw_streamed, lazy_obs, embedding, claude_obs, async_obs = obs
    # a raw answer is recorded like a parsed one
    assert plain.output == reply.choices[0].message.content
    assert reply.usage is not None and plain.usage.output == reply.usage.completion_tokens
    assert embedding.kind is ObservationKind.EMBEDDING and embedding.usage.input == 2
    assert claude_obs.output == message.content[0].text  # type: ignore[union-attr]
    assert async_obs.output == async_text
    # the bodies the caller reads itself (a raw stream, with_streaming_response) are left to it
    assert streamed and raw_streamed.output is None
    assert lazy_reply.choices[0].message.content and lazy_obs.output is None
