"""No silent drops: the official ``openai`` client asks an Anthropic deployment (SimulatedUpstream
speaking Anthropic's API, on loopback) for what it cannot honour: a 400 naming the parameter, unless
the request or the deployment opts into dropping it, and then the trace records what was dropped."""

from __future__ import annotations

import time
from collections.abc import Iterator

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
