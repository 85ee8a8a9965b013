"""Streamed answers through output guards, with the real ``openai`` and ``anthropic`` clients against
the gateway (the app of ``pilothouse serve``, in this process on loopback) in front of the
SimulatedUpstream in echo mode: a redacted stream has the shape of an unguarded one (no empty text
deltas), the Anthropic events keep their order, a blocked stream is a 400 in the surface's format,
and the trace keeps only the redacted text, with each guard's score."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from pilothouse.testing import SimConfig, SimulatedUpstream
from tests.gateway.conftest import Gateway, start_gateway

pytestmark = pytest.mark.slow  # the traces are read once stored

EMAIL, PHONE = "alice.doe@example.com", "+44 20 7946 0958"
# long enough that the redactor holds text back and releases it in several pieces
SAID = " ".join(
    [f"word{i}" for i in range(40)] + ["mail", EMAIL, "or", "call", PHONE] + [f"more{i}" for i in range(60)]
)
REDACTED = SAID.replace(EMAIL, "[EMAIL]").replace(PHONE, "[PHONE]")
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with SimulatedUpstream(SimConfig(echo=True)) as upstream:
        base = {"provider": "openai", "model": "echo-1", "base_url": upstream.base_url + "/v1"}
        models = [{**base, "name": name} for name in ("plain", "redact", "block")]
        guardrails = [
            {"models": ["redact"], "output": [{"type": "pii", "action": "redact"}]},
            {"models": ["block"], "output": [{"type": "blocklist", "words": ["launch codes"]}]},
        ]
        gateway = start_gateway(
            tmp_path_factory.mktemp("guarded-streams"), upstream, models, extra={"guardrails": guardrails}
        )
        yield gateway
        gateway.server.stop()


def _openai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)


def _anthropic(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.server.base_url, api_key=gw.key, max_retries=0)


def _shape(chunks: list[Any]) -> list[str]:
    """What each chunk carries, choice by choice: role, text, tool call, finish or usage."""
    shape = []
    for chunk in chunks:
        if not chunk.choices:
            shape.append("usage" if chunk.usage is not None else "empty")
        for choice in chunk.choices:
            delta = choice.delta
            parts = []
            if delta.role:
                parts.append(f"{choice.index}:role")
            if delta.content:
                parts.append(f"{choice.index}:text")
            elif delta.content == "" and not delta.role:
                parts.append(f"{choice.index}:EMPTY-TEXT")
            if delta.tool_calls:
                parts.append(f"{choice.index}:tool")
            if choice.finish_reason:
                parts.append(f"{choice.index}:finish")
            shape.append("+".join(parts) or f"{choice.index}:nothing")
    return shape


def _compact(shape: list[str]) -> list[str]:
    """``shape`` with runs of text chunks counted as one (a guard releases text in fewer pieces)."""
    out: list[str] = []
    for part in shape:
        if not (out and out[-1] == part and part.endswith(":text")):
            out.append(part)
    return out


def _stream(gw: Gateway, model: str, **more: Any) -> list[Any]:
    return list(
        _openai(gw).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": SAID}],
            stream=True,
            stream_options={"include_usage": True},
            **more,
        )
    )


def _text(chunks: list[Any], index: int = 0) -> str:
    return "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices if c.index == index)


def test_a_redacted_openai_stream_has_the_shape_of_an_unguarded_one(gw: Gateway) -> None:
    plain, guarded = _stream(gw, "plain"), _stream(gw, "redact")
    assert _text(plain) == SAID and _text(guarded) == REDACTED
    assert "0:EMPTY-TEXT" not in _shape(guarded)
    assert _compact(_shape(guarded)) == _compact(_shape(plain)) == ["0:role", "0:text", "0:finish", "usage"]
    assert guarded[-1].usage.completion_tokens == plain[-1].usage.completion_tokens
    whole = _openai(gw).chat.completions.create(model="redact", messages=[{"role": "user", "content": SAID}])
    assert whole.choices[0].message.content == REDACTED


def test_each_of_n_choices_is_redacted_on_its_own(gw: Gateway) -> None:
    plain, guarded = _stream(gw, "plain", n=2), _stream(gw, "redact", n=2)
    assert [_text(guarded, i) for i in (0, 1)] == [REDACTED, REDACTED]
    shape = _shape(guarded)
    assert not any("EMPTY-TEXT" in part for part in shape)
    # each choice: role, text, finish (in order), then one usage chunk, as unguarded
    for index in (0, 1):
        mine = [p for p in _compact(shape) if p.startswith(f"{index}:")]
        theirs = [p for p in _compact(_shape(plain)) if p.startswith(f"{index}:")]
        assert _compact(mine) == _compact(theirs) == [f"{index}:role", f"{index}:text", f"{index}:finish"]
    assert shape[-1] == "usage"


def test_a_tool_call_streams_through_a_redacting_guard(gw: Gateway) -> None:
    chunks = list(
        _openai(gw).chat.completions.create(
            model="redact",
            messages=[{"role": "user", "content": f"find {EMAIL}"}],
            tools=TOOLS,  # type: ignore[arg-type]
            stream=True,
        )
    )
    assert _shape(chunks) == ["0:role", "0:tool", "0:finish"]
    call = next(c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls)
    assert call.function.name == "lookup"  # tool-call arguments are not checked (documented)


def test_the_anthropic_stream_keeps_its_event_order_and_its_text(gw: Gateway) -> None:
    client = _anthropic(gw)
    asked: dict[str, Any] = {
        "model": "redact",
        "max_tokens": 500,
        "messages": [{"role": "user", "content": SAID}],
    }
    whole = client.messages.create(**asked)
    assert whole.content[0].type == "text" and whole.content[0].text == REDACTED
    with client.messages.stream(**asked) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason == "end_turn"
    kinds = [e.type for e in events if not e.type.startswith(("text", "input_json"))]
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert deltas and all(e.delta.type == "text_delta" and e.delta.text for e in deltas)
    assert kinds == (
        ["message_start", "content_block_start"]
        + ["content_block_delta"] * len(deltas)
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_a_blocked_stream_is_a_400_in_each_surface_and_traced(gw: Gateway) -> None:
    said = "here are the launch codes you asked for"
    with pytest.raises(openai.BadRequestError) as info:
        list(
            _openai(gw).chat.completions.create(
                model="block", messages=[{"role": "user", "content": said}], stream=True
            )
        )
    assert info.value.code == "guardrail_blocked" and "'blocklist'" in info.value.message
    assert said not in str(info.value.body)
    with (
        pytest.raises(anthropic.BadRequestError) as refused,
        _anthropic(gw).messages.stream(
            model="block", max_tokens=100, messages=[{"role": "user", "content": said}]
        ) as stream,
    ):
        stream.get_final_message()
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "blocked by the guardrail 'blocklist'" in refused.value.message
    blocked = [
        t for t in gw.traces(20) if t["observations"][0]["attributes"].get("gateway.http_status") == 400
    ]
    assert len(blocked) >= 2
    for trace in blocked:
        span = trace["observations"][0]
        assert span["status"] == "error" and span["attributes"]["gateway.http_status"] == 400
        assert json.loads(json.dumps(span["output"])) == "here are the [BLOCKED] you asked for"
        (outcome,) = span["attributes"]["gateway.guardrails"]
        assert outcome["passed"] is False and outcome["score"] == 0.0


def test_a_guarded_stream_is_traced_redacted_with_the_guards_score(gw: Gateway) -> None:
    reply = _openai(gw).chat.completions.with_raw_response.create(
        model="redact", messages=[{"role": "user", "content": SAID}], stream=True
    )
    trace_id = reply.headers["x-pilothouse-trace-id"]
    assert _text(list(reply.parse())) == REDACTED
    (trace,) = [t for t in gw.traces(30) if t["id"] == trace_id]
    span = trace["observations"][0]
    stored = json.dumps(span["output"])
    assert EMAIL not in stored and PHONE not in stored and "[EMAIL]" in stored
    (outcome,) = span["attributes"]["gateway.guardrails"]
    assert outcome["guard"] == "pii" and outcome["passed"] is False and outcome["found"] == 2
    assert outcome["score"] == 0.0 and "EMAIL" in outcome["reason"]
