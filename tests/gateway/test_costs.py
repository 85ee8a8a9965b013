"""The cost table: for each upstream format (OpenAI, Anthropic), each surface (chat completions,
messages), streamed and not, with cached, cache-write and reasoning tokens, the stored cost equals the
value computed by hand from the catalogue; the SDK's traces of direct calls are priced the same way."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

import pilothouse
from pilothouse.costs.catalogue import PriceCatalogue
from pilothouse.testing import SimConfig, SimulatedUpstream
from tests.gateway.conftest import Gateway, start_gateway

# 20 prompt words: the simulated upstream reports 5 cache reads and 5 cache writes (Anthropic format
# only; OpenAI reports no writes), 12 answer words and 3 reasoning tokens.
PROMPT = " ".join(f"w{i}" for i in range(20))
MESSAGES = [{"role": "user", "content": PROMPT}]
M = 1e-6  # catalogue prices are per 1M tokens
# gpt-4o-mini (2024-07-18): input $0.15, cached $0.075, output $0.60 (reasoning at the output rate)
GPT = {
    "input": 15 * 0.15 * M,
    "cache_read": 5 * 0.075 * M,
    "output": 12 * 0.60 * M,
    "reasoning": 3 * 0.60 * M,
}
# claude-haiku-4-5: input $1, cache read $0.10, cache write $1.25, output $5 (thinking is output)
CLAUDE = {
    "input": 10 * 1.0 * M,
    "cache_read": 5 * 0.10 * M,
    "cache_write": 5 * 1.25 * M,
    "output": 15 * 5.0 * M,
}


def test_the_catalogue_rows_the_table_is_computed_from() -> None:
    catalogue = PriceCatalogue.packaged()
    gpt = catalogue.lookup("openai", "gpt-4o-mini")
    claude = catalogue.lookup("anthropic", "claude-haiku-4-5")
    assert gpt is not None and (gpt.input, gpt.cache_read, gpt.output, gpt.reasoning) == (
        0.15,
        0.075,
        0.6,
        None,
    )
    assert claude is not None
    assert (claude.input, claude.cache_read, claude.cache_write, claude.output) == (1.0, 0.1, 1.25, 5.0)


@pytest.fixture(scope="module")
def priced_upstream() -> Iterator[SimulatedUpstream]:
    config = SimConfig(cached_fraction=0.25, cache_write_fraction=0.25, reasoning_tokens=3)
    with SimulatedUpstream(config) as up:
        yield up


@pytest.fixture
def gw(tmp_path: Path, priced_upstream: SimulatedUpstream) -> Iterator[Gateway]:
    models = [
        {
            "name": "gpt",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "base_url": priced_upstream.base_url + "/v1",
        },
        {
            "name": "claude",
            "provider": "anthropic",
            "model": "claude-haiku-4-5",
            "base_url": priced_upstream.base_url,
            "api_key": "sk-ant-upstream",
        },
        {  # a priced model whose upstream fails every call after it was asked
            "name": "gpt-4o",  # a catalogue name: the ingest could price it
            "provider": "openai",
            "model": "gpt-4o-mini",
            "base_url": priced_upstream.base_url + "/v1",
            "options": {"headers": {"x-sim-status": "500"}},
        },
    ]
    gateway = start_gateway(tmp_path, priced_upstream, models)
    yield gateway
    gateway.server.stop()


def _stored_cost(gw: Gateway, trace_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(f"{gw.server.base_url}/api/traces/{trace_id}", headers=gw.auth)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    cost: dict[str, Any] = r.json()["observations"][0]["cost"]
    return cost


@pytest.mark.parametrize(("model", "expected"), [("gpt", GPT), ("claude", CLAUDE)])
def test_cost_table_openai_surface(gw: Gateway, model: str, expected: dict[str, float]) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    buffered = _stored_cost(gw, raw.headers["x-pilothouse-trace-id"])
    assert buffered["items"] == pytest.approx(expected)
    assert buffered["total"] == pytest.approx(sum(expected.values()))
    assert float(raw.headers["x-pilothouse-cost-usd"]) == pytest.approx(sum(expected.values()), abs=1e-10)

    raw_stream = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    assert raw_stream.headers["x-pilothouse-cost-usd"] == "pending"  # on the trace once the stream ends
    list(raw_stream.parse())
    streamed = _stored_cost(gw, raw_stream.headers["x-pilothouse-trace-id"])
    assert streamed == buffered  # streamed cost equals buffered cost


@pytest.mark.parametrize(("model", "expected"), [("gpt", GPT), ("claude", CLAUDE)])
def test_cost_table_messages_surface(gw: Gateway, model: str, expected: dict[str, float]) -> None:
    client = anthropic.Anthropic(base_url=gw.server.base_url, api_key=gw.key, max_retries=0)
    raw = client.messages.with_raw_response.create(model=model, max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
    buffered = _stored_cost(gw, raw.headers["x-pilothouse-trace-id"])
    assert buffered["items"] == pytest.approx(expected)
    with client.messages.stream(model=model, max_tokens=50, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        stream.get_final_message()
        trace_id = stream.response.headers["x-pilothouse-trace-id"]
    assert _stored_cost(gw, trace_id) == buffered


def test_sdk_traced_direct_calls_are_priced_like_gateway_calls(
    gw: Gateway, priced_upstream: SimulatedUpstream
) -> None:
    # The application calls the upstream directly; the SDK's spans go to the collector over OTLP.
    pilothouse.init(base_url=gw.server.base_url, api_key=gw.key, service_name="cost-test", set_global=False)
    pilothouse.instrument_openai()
    try:
        client = openai.OpenAI(
            base_url=priced_upstream.base_url + "/v1", api_key="sk-upstream", max_retries=0
        )
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        list(stream)
        pilothouse.flush()
    finally:
        pilothouse.uninstrument_openai()
        pilothouse.shutdown()
    traces = gw.traces(2)
    costs = [t["observations"][0]["cost"] for t in traces]
    assert len(costs) == 2
    for cost in costs:
        assert (
            cost["items"] == pytest.approx(GPT) and cost["price_version"] == "openai/gpt-4o-mini@2024-07-18"
        )


def test_a_call_that_failed_after_asking_an_upstream_costs_unknown_on_the_trace_too(gw: Gateway) -> None:
    """What that upstream billed is not known: the header says ``unknown`` and so does the stored
    trace (the ingest's pricing of calls without a cost made it $0.00: zero tokens at the model's
    price). A call refused before any upstream was asked costs $0 on both."""
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    headers = failed.value.response.headers
    assert headers["x-pilothouse-cost-usd"] == "unknown"
    assert _stored_cost(gw, headers["x-pilothouse-trace-id"]) is None
