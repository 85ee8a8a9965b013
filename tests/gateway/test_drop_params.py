"""No silent drops: the official ``openai`` client asks an Anthropic deployment (SimulatedUpstream
speaking Anthropic's API, on loopback) for what it cannot honour: a 400 naming the parameter, unless
the request or the deployment opts into dropping it, and then the trace records what was dropped."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import pytest

from pilothouse.testing import SimulatedUpstream
from tests.gateway.conftest import Gateway, start_gateway

pytestmark = pytest.mark.slow  # the real client over loopback

TOOLS = [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}]
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: SimulatedUpstream) -> Iterator[Gateway]:
    claude = {"provider": "anthropic", "model": "claude-haiku-4", "base_url": upstream.base_url}
    models = [
        {"name": "claude", **claude},
        {"name": "claude-lenient", **claude, "options": {"drop_params": True}},
        {"name": "gpt", "provider": "openai", "model": "gpt-4o-mini", "base_url": upstream.base_url + "/v1"},
    ]
    gateway = start_gateway(tmp_path_factory.mktemp("drops"), upstream, models, router={"retries": 0})
    yield gateway
    gateway.server.stop()


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("n", {"n": 2}),
        ("logprobs", {"logprobs": True}),
        ("response_format", {"response_format": {"type": "json_object"}}),
        ("seed", {"seed": 7}),
    ],
)
def test_a_parameter_the_deployment_cannot_honour_is_a_400_naming_it(
    gw: Gateway, name: str, extra: dict[str, object]
) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=HELLO, **extra)  # type: ignore[call-overload]
    assert f"'{name}'" in info.value.message and "drop_params" in info.value.message
    assert info.value.code == "unsupported_parameter"
    # an OpenAI deployment honours it: passed on
    ok = client.chat.completions.create(model="gpt", messages=HELLO, **extra)  # type: ignore[call-overload]
    assert ok.choices[0].message.content


def test_dropping_is_asked_for_and_recorded(gw: Gateway, upstream: SimulatedUpstream) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    asked = client.chat.completions.create(
        model="claude", messages=HELLO, n=2, seed=3, extra_body={"drop_params": True}
    )
    sent = upstream.requests[-1]
    assert asked.choices[0].message.content and "seed" not in sent and "drop_params" not in sent
    by_deployment = client.chat.completions.create(model="claude-lenient", messages=HELLO, logprobs=True)
    assert by_deployment.choices[0].message.content
    assert _dropped(gw, 2) == [("logprobs",), ("n", "seed")]


def _dropped(gw: Gateway, expected: int) -> list[tuple[str, ...]]:
    """What the traces say was dropped, once ``expected`` calls say so (recording follows the answer)."""
    for _ in range(100):
        found = sorted(
            tuple(attempt["dropped_params"])
            for trace in gw.traces(1)
            for observation in trace["observations"]
            for attempt in observation["attributes"].get("gateway.attempts", [])
            if attempt.get("dropped_params")
        )
        if len(found) >= expected:
            return found
        time.sleep(0.1)
    return found


def test_parallel_tool_calls_false_is_honoured_by_anthropic(gw: Gateway, upstream: SimulatedUpstream) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    client.chat.completions.create(
        model="claude",
        messages=HELLO,
        tools=TOOLS,  # type: ignore[arg-type]
        parallel_tool_calls=False,
    )
    assert upstream.requests[-1]["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_the_same_rule_on_responses_and_completions(gw: Gateway, upstream: SimulatedUpstream) -> None:
    """/v1/responses and /v1/completions go through the one rule of chat completions: a 400 naming
    the parameter, or dropped (and recorded) when the request asks."""
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="claude", input="hello there", top_logprobs=2)
    assert "'top_logprobs'" in info.value.message and info.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="claude", prompt="hello there", n=2)
    assert "'n'" in info.value.message and info.value.code == "unsupported_parameter"
    answer = client.responses.create(
        model="claude", input="hello there", top_logprobs=2, extra_body={"drop_params": True}
    )
    assert answer.output_text and "drop_params" not in upstream.requests[-1]
    text = client.completions.create(
        model="claude", prompt="hello there", n=2, extra_body={"drop_params": True}
    )
    assert text.choices[0].text
    assert [d for d in _dropped(gw, 4) if d in (("n",), ("top_logprobs",))][-2:] == [
        ("n",),
        ("top_logprobs",),
    ]


def test_a_messages_request_translated_keeps_or_names_what_it_asked(
    gw: Gateway, upstream: SimulatedUpstream
) -> None:
    """/v1/messages to an OpenAI deployment: thinking becomes reasoning_effort and top_k is passed on;
    cache_control, which the OpenAI shape cannot carry, is a 400 unless dropped (then recorded)."""
    client = anthropic.Anthropic(base_url=gw.server.base_url, api_key=gw.key, max_retries=0)
    hello = [{"role": "user", "content": "hello there"}]
    client.messages.create(
        model="gpt",
        max_tokens=4096,
        messages=hello,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body={"top_k": 5},  # Anthropic's API takes it; this SDK release has no argument for it
    )
    sent = upstream.requests[-1]
    assert (sent["reasoning_effort"], sent["top_k"]) == ("low", 5)
    cached = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="gpt", max_tokens=64, system=cached, messages=hello)  # type: ignore[arg-type]
    assert "'cache_control'" in info.value.message and "drop_params" in info.value.message
    reply = client.messages.create(
        model="gpt",
        max_tokens=64,
        system=cached,  # type: ignore[arg-type]
        messages=hello,  # type: ignore[arg-type]
        extra_body={"drop_params": True},
    )
    assert reply.content and "drop_params" not in upstream.requests[-1]
    assert ("cache_control",) in _dropped(gw, 5)
    # to an Anthropic deployment the same body goes as sent (drop_params itself removed)
    client.messages.create(
        model="claude",
        max_tokens=64,
        system=cached,  # type: ignore[arg-type]
        messages=hello,  # type: ignore[arg-type]
        extra_body={"drop_params": True},
    )
    assert upstream.requests[-1]["system"] == cached and "drop_params" not in upstream.requests[-1]


def test_the_upstreams_request_id_is_passed_on_and_traced(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt", messages=HELLO)
    upstream_id = raw.headers["x-pilothouse-upstream-request-id"]
    assert upstream_id.startswith("req_sim_") and raw.headers["x-request-id"] != upstream_id
    with client.chat.completions.with_streaming_response.create(
        model="claude", messages=HELLO, stream=True
    ) as s:
        streamed_id = s.headers["x-pilothouse-upstream-request-id"]  # Anthropic's request-id header
        assert streamed_id.startswith("req_sim_") and streamed_id != upstream_id
    ids = set()
    for _ in range(100):
        ids = {
            attempt.get("upstream_request_id")
            for trace in gw.traces(1)
            for observation in trace["observations"]
            for attempt in observation["attributes"].get("gateway.attempts", [])
        }
        if {upstream_id, streamed_id} <= ids:
            break
        time.sleep(0.1)
    assert {upstream_id, streamed_id} <= ids
