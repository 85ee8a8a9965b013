"""Attribution of gateway calls, with the official ``openai`` client (SimulatedUpstream behind the
gateway, on loopback): tags from headers and from the body's ``metadata.tags``, metadata key/values,
the session header, and ``traceparent`` passed upstream so that chained gateways form one trace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from pilothouse.testing import SimulatedUpstream
from tests.gateway.conftest import Gateway, start_gateway

pytestmark = pytest.mark.slow  # the real client over loopback

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: SimulatedUpstream) -> Iterator[Gateway]:
    models = [
        {"name": "gpt", "provider": "openai", "model": "gpt-4o-mini", "base_url": upstream.base_url + "/v1"},
        {"name": "claude", "provider": "anthropic", "model": "claude-haiku-4", "base_url": upstream.base_url},
    ]
    gateway = start_gateway(tmp_path_factory.mktemp("attribution"), upstream, models)
    yield gateway
    gateway.server.stop()


def _trace(gw: Gateway, trace_id: str) -> dict[str, Any]:
    for _ in range(100):
        found = [t for t in gw.traces(1) if t["id"] == trace_id]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"trace {trace_id} was not recorded")


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_tags_metadata_session_and_traceparent(gw: Gateway, upstream: SimulatedUpstream, model: str) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    trace_id = TRACE_ID[:-4] + ("0001" if model == "gpt" else "0002")
    client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello"}],
        extra_body={"metadata": {"tags": ["nightly", "batch"], "team": "search"}},
        extra_headers={
            "x-pilothouse-tags": "web, nightly",
            "x-pilothouse-session-id": "session-7",
            "traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01",
        },
    )
    sent, headers = upstream.requests[-1], upstream.request_headers[-1]
    if model == "gpt":  # the tags are the gateway's; the rest of the metadata goes on
        assert sent["metadata"] == {"team": "search"}
    trace = _trace(gw, trace_id)
    generation = trace["observations"][0]
    assert trace["tags"] == ["web", "nightly", "batch"] and trace["session_id"] == "session-7"
    assert trace["metadata"]["team"] == "search"
    assert generation["parent_id"] == CLIENT_SPAN
    # the upstream is a child of the gateway's span, in the client's trace
    assert headers["traceparent"] == f"00-{trace_id}-{generation['id']}-01"


def test_anthropic_metadata_tags_are_recorded_and_only_user_id_goes_to_anthropic(
    gw: Gateway, upstream: SimulatedUpstream
) -> None:
    client = anthropic.Anthropic(base_url=gw.server.base_url, api_key=gw.key, max_retries=0)
    trace_id = TRACE_ID[:-4] + "0003"
    client.messages.create(
        model="claude",
        max_tokens=16,
        messages=[{"role": "user", "content": "hello"}],
        metadata={"user_id": "u-9", "tags": ["agents"], "team": "search"},  # type: ignore[typeddict-unknown-key]
        extra_headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"},
    )
    assert upstream.requests[-1]["metadata"] == {"user_id": "u-9"}
    trace = _trace(gw, trace_id)
    assert trace["tags"] == ["agents"] and trace["metadata"]["team"] == "search" and trace["user_id"] == "u-9"
