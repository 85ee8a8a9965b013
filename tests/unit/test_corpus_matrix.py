"""The normaliser on the later corpus (Anthropic Messages API, pydantic-ai, Logfire, OpenLIT, two
instrumentations on one call): every cell of docs/compatibility.md's matrix, and the fields the
issue names, each read from the real payloads in tests/corpus/payloads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pilothouse.domain.duplicates import COUNTED_IN
from pilothouse.domain.rollups import batch_deltas
from pilothouse.domain.traces import ObservationKind, Status, Usage
from pilothouse.tracing.otlp import decode_protobuf

_spec = importlib.util.spec_from_file_location(
    "corpus_matrix", Path(__file__).parents[1] / "corpus" / "matrix.py"
)
assert _spec is not None and _spec.loader is not None
matrix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(matrix)

ANTHROPIC = Usage(input=20, output=12, cache_read=8, cache_write=4)  # the upstream's raw usage
TOOL_ANSWER = "It is 18 degrees Celsius and sunny in Paris."
OPENAI = Usage(input=12, output=12, cache_read=8, reasoning=5)  # prompt 20 of which 8 cached


def raw_attribute(instrumentation: str, scenario: str, key: str) -> object:
    """The value of ``key`` on the payload's span that has it, as the package sent it."""
    data = (matrix.PAYLOADS / instrumentation / f"{scenario}.pb").read_bytes()
    return next(r.attributes[key] for r in decode_protobuf(data) if key in r.attributes)


@pytest.mark.parametrize("instrumentation", sorted(matrix.INSTRUMENTATIONS))
def test_matrix_cells(instrumentation: str) -> None:
    cells = {field: matrix.cell(instrumentation, field) for field in matrix.FIELDS}
    assert not [f for f, c in cells.items() if c.startswith("FAIL")], cells


def test_compatibility_page_is_current() -> None:
    assert matrix.section(matrix.DOC.read_text()) == matrix.render()


@pytest.mark.parametrize("instrumentation", ["anthropic-sdk", "openinference-anthropic", "openlit-anthropic"])
def test_anthropic_usage_counts_each_token_once(instrumentation: str) -> None:
    for scenario in ("chat", "chat_stream"):
        (call,) = matrix.counted(matrix.load(instrumentation, scenario))
        assert call.usage == ANTHROPIC
        assert call.request_model == "claude-sonnet-4-5"


def test_openlit_raw_anthropic_input_is_read_as_raw() -> None:
    # OpenLIT copies Anthropic's input_tokens (cache excluded): 20, which is >= read + write (12),
    # so "input >= read + write" would wrongly have taken 12 of them as cached
    assert raw_attribute("openlit-anthropic", "chat", "gen_ai.usage.input_tokens") == 20
    assert matrix.counted(matrix.load("openlit-anthropic", "chat"))[0].usage.input == 20
    # the Anthropic SDK's own spans count the cache inside: 32 = 20 + 8 + 4
    assert raw_attribute("anthropic-sdk", "chat", "gen_ai.usage.input_tokens") == 32


@pytest.mark.parametrize(
    ("instrumentation", "key", "scale"),
    [
        ("anthropic-sdk", "gen_ai.response.time_to_first_chunk", 1e9),
        ("pydantic-ai", "gen_ai.client.operation.time_to_first_chunk", 1e9),
        ("openlit", "gen_ai.server.time_to_first_token", 1e9),
    ],
)
def test_ttft_from_each_convention(instrumentation: str, key: str, scale: float) -> None:
    seconds = raw_attribute(instrumentation, "chat_stream", key)
    (call,) = matrix.counted(matrix.load(instrumentation, "chat_stream"))
    assert isinstance(seconds, float) and call.ttft_ns == int(seconds * scale)
    (plain,) = matrix.counted(matrix.load(instrumentation, "chat"))
    assert plain.ttft_ns is None  # OpenLIT's server TTFT of a call that did not stream is its duration


def test_openinference_anthropic_output_parts_and_request_model() -> None:
    (call,) = matrix.counted(matrix.load("openinference-anthropic", "chat"))
    assert call.output == matrix.ANSWER  # from llm.output_messages.0.message.contents.0.message_content
    assert call.request_model == "claude-sonnet-4-5" and call.model == "claude-sonnet-4-5-20250929"


def test_two_instrumentations_on_one_call_count_once() -> None:
    records = matrix.load("anthropic-dual", "chat_tools")
    outer = [o for o in matrix.calls(records) if o.attributes.get(COUNTED_IN) is None]
    inner = [o for o in matrix.calls(records) if o.attributes.get(COUNTED_IN) is not None]
    assert len(outer) == 2 and len(inner) == 2  # both spans of both calls are kept
    assert all(o.usage.is_empty and o.cost is not None and o.cost.total.pico == 0 for o in inner)
    assert {o.attributes[COUNTED_IN] for o in inner} == {o.id for o in outer}
    (delta,) = batch_deltas(records).traces.values()  # the trace summary the store merges
    assert delta.input_tokens == 2 * ANTHROPIC.input_total and delta.output_tokens == 2 * 12
    assert delta.unpriced_count == 2  # the two counted calls (no price row here), not four


def test_pydantic_ai_tool_span_and_usage_details() -> None:
    records = matrix.load("pydantic-ai", "chat_tools")
    (tool,) = [r.observation for r in records if r.observation.kind is ObservationKind.TOOL]
    assert tool.input == raw_attribute("pydantic-ai", "chat_tools", "gen_ai.tool.call.arguments")
    assert tool.output == '{"temperature":18,"sky":"sunny"}'
    first, _ = matrix.counted(records)
    assert first.usage == OPENAI  # reasoning from gen_ai.usage.details.reasoning_tokens
    assert {r.trace.session_id for r in records if r.trace.session_id} == {
        raw_attribute("pydantic-ai", "chat_tools", "gen_ai.conversation.id")
    }


def test_logfire_stream_is_one_generation_with_formatted_names() -> None:
    records = matrix.load("logfire", "chat_stream")
    (call,) = matrix.calls(records)
    assert call.name.startswith(
        "streaming response from 'gpt-4o-mini' took "
    )  # logfire.msg, not the template
    assert call.output == matrix.ANSWER and call.usage == OPENAI  # reasoning from gen_ai.usage.raw
    assert call.duration_ns > 0  # the log span made to cover the stream (its `duration`)
    request = next(
        r.observation for r in records if r.observation.name == "Chat Completion with 'gpt-4o-mini'"
    )
    assert request.kind is ObservationKind.SPAN
    assert all(
        "LLM" in r.trace.tags for r in records if r.observation.attributes.get("logfire.tags") is not None
    )


def test_openlit_system_prompt_once() -> None:
    (call,) = matrix.counted(matrix.load("openlit", "chat"))
    assert (call.input or "").count("You are a terse assistant.") == 1
    assert raw_attribute("openlit", "chat", "gen_ai.system_instructions")  # sent twice by the package


def test_failed_calls_are_errors() -> None:
    for instrumentation in ("anthropic-sdk", "openinference-anthropic", "pydantic-ai", "logfire", "openlit"):
        failed = [o for o in matrix.calls(matrix.load(instrumentation, "error")) if o.status is Status.ERROR]
        assert failed and all(o.status_message for o in failed), instrumentation


def test_vercel_ai_sdk_calls_tools_identity_and_ttft() -> None:
    records = matrix.load("vercel-ai", "chat_tools")
    first, second = matrix.counted(records)  # the doGenerate spans; ai.generateText sums them, not counted
    assert first.usage == second.usage == OPENAI
    outer = next(r.observation for r in records if r.observation.name == "ai.generateText")
    assert outer.kind is ObservationKind.SPAN and outer.usage.is_empty
    assert outer.output == TOOL_ANSWER and "get_weather" in (first.output or "")  # ai.response.toolCalls
    (tool,) = [r.observation for r in records if r.observation.kind is ObservationKind.TOOL]
    assert tool.input == raw_attribute("vercel-ai", "chat_tools", "ai.toolCall.args")
    assert tool.output == raw_attribute("vercel-ai", "chat_tools", "ai.toolCall.result")
    trace = {(r.trace.user_id, r.trace.session_id, r.trace.tags) for r in records if r.trace.user_id}
    assert trace == {("user-corpus-1", "session-corpus-1", ("corpus", "vercel"))}
    ms = raw_attribute("vercel-ai", "chat_stream", "ai.response.msToFirstChunk")
    (stream,) = matrix.counted(matrix.load("vercel-ai", "chat_stream"))
    assert isinstance(ms, float) and stream.ttft_ns == int(ms * 1e9) // 1000
