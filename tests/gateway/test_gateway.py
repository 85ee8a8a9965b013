"""The gateway driven by the official openai client over loopback: every call becomes a trace."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest

from pilothouse.testing import SimulatedUpstream
from tests.gateway.conftest import Gateway, start_gateway

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "one two three four five six"},
]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def test_openai_client_through_the_gateway(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0)
    assert {m.id for m in client.models.list()} == {"gpt-4o-mini", "text-embedding-3-small", "sim"}
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=0.1
    )
    reply = raw.parse()
    # gpt-4o-mini: 4 input x $0.15/M + 4 cached x $0.075/M + 12 output x $0.60/M + 2 reasoning x $0.60/M
    assert reply.choices[0].message.content and raw.headers["x-pilothouse-cost-usd"] == "0.0000093"
    trace_id = raw.headers["x-pilothouse-trace-id"]
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage: none is passed on
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    tool = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]
    assert (
        tool.choices[0].message.tool_calls and tool.choices[0].message.tool_calls[0].function.name == "lookup"
    )
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert len(emb.data) == 2
    raw_sim = client.chat.completions.with_raw_response.create(model="sim", messages=MESSAGES)
    sim = raw_sim.parse()
    assert sim.model == "sim-1" and sim.usage is not None and sim.usage.completion_tokens == 5
    assert raw_sim.headers["x-pilothouse-cost-usd"] == "unknown"  # no price for sim-1: unknown, not 0

    async def async_stream() -> str:
        aclient = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0)
        s = await aclient.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        parts = [c async for c in s]
        assert parts[-1].usage is not None and parts[-1].usage.prompt_tokens == 8
        return "".join(c.choices[0].delta.content or "" for c in parts if c.choices)

    assert asyncio.run(async_stream()) == streamed
    traces = {t["id"]: t for t in gateway.traces(6)}
    assert len(traces) == 6
    first = traces[trace_id]["observations"][0]
    assert first["type"] == "generation" and first["model"] == "gpt-4o-mini" and first["provider"] == "openai"
    # 8 prompt words, half reported cached; 12 words + 2 reasoning tokens out
    assert first["usage"] == {
        "input": 4,
        "output": 14,
        "cache_read": 4,
        "cache_write": 0,
        "reasoning": 2,
        "total": 22,
    }
    assert first["cost"]["total"] == pytest.approx(9.3e-6)
    assert first["cost"]["price_version"] == "openai/gpt-4o-mini@2024-07-18"
    assert first["output"] == reply.choices[0].message.content
    assert first["model_parameters"]["temperature"] == 0.1
    assert first["attributes"]["gateway.attempts"][0]["status"] == 200
    generations = [t["observations"][0] for t in traces.values()]
    streams = [g for g in generations if g["model_parameters"].get("stream")]
    assert len(streams) == 2 and all(g["ttft_ms"] is not None and g["output"] == streamed for g in streams)
    assert all(g["usage"]["total"] == 22 for g in streams)  # usage recorded though the client did not ask
    embedding = next(g for g in generations if g["type"] == "embedding")
    assert embedding["usage"]["input"] == 3


def test_traceparent_nests_the_call_under_the_callers_trace(gateway: Gateway) -> None:
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "sim", "messages": MESSAGES},
        headers={**gateway.auth, "traceparent": f"00-{trace}-{parent}-01", "x-pilothouse-user": "alice"},
    )
    assert r.status_code == 200 and r.headers["x-pilothouse-trace-id"] == trace
    (detail,) = gateway.traces(1)
    assert detail["id"] == trace and detail["observations"][0]["parent_id"] == parent
    assert detail["user_id"] == "alice"


def test_bad_input_gets_openai_errors_and_is_traced(gateway: Gateway) -> None:
    url = gateway.base_url + "/chat/completions"
    cases = [
        (dict(content=b"{nope", headers={**gateway.auth, "Content-Type": "application/json"}), 400, None),
        (dict(json={"model": "nope", "messages": MESSAGES}, headers=gateway.auth), 404, "model_not_found"),
        (
            dict(json={"model": "sim", "messages": MESSAGES, "temperature": 7}, headers=gateway.auth),
            400,
            None,
        ),
        (dict(json={"model": "sim"}, headers=gateway.auth), 400, None),
        (dict(json={"model": "sim", "messages": "hi"}, headers=gateway.auth), 400, None),
        (dict(json={"model": "sim", "messages": MESSAGES}), 401, "invalid_api_key"),
        (
            dict(json={"model": "sim", "messages": MESSAGES}, headers={"Authorization": "Bearer ph-bad"}),
            401,
            None,
        ),
    ]
    for kwargs, status, code in cases:
        r = httpx.post(url, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, (kwargs, r.text)
        error = r.json()["error"]
        assert error["message"] and error["type"]
        if code:
            assert error["code"] == code
        if status != 401:  # refused before any upstream was asked: it cost nothing
            assert r.headers["x-pilothouse-cost-usd"] == "0", kwargs
    r = httpx.post(url, json={"model": "sim", "messages": MESSAGES, "temperature": 7}, headers=gateway.auth)
    assert r.json()["error"]["param"] == "temperature"
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    traced = gateway.traces(7)
    statuses = sorted(t["observations"][0]["attributes"]["gateway.http_status"] for t in traced)
    # the key-less calls have no project to go to; a value of the wrong type or range is a 400, as OpenAI
    # answers (not 422, which the official SDKs raise as UnprocessableEntityError)
    assert statuses == [400, 400, 400, 400, 400, 404, 404]
    # Nothing was spent on them: $0, not "unknown" (they would show as models without a price)
    assert {(t["cost_usd"], t["observations"][0]["cost"]["total"]) for t in traced} == {(0.0, 0.0)}


def test_odd_shapes_and_deep_nesting_are_refused_in_the_openai_shape_and_traced(gateway: Gateway) -> None:
    url = gateway.base_url + "/chat/completions"
    deep: object = "x"
    for _ in range(600):
        deep = [deep]
    bodies = [
        {"model": "sim", "messages": [{"role": "assistant", "tool_calls": 5}]},
        {"model": "sim", "messages": [{"role": "assistant", "tool_calls": [{"function": 5}]}]},
        {"model": "sim", "messages": [{"role": "user", "content": 5}]},
        {"model": "sim", "messages": [{"role": "user", "content": [5]}]},
        {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "tools": [{"parameters": deep}]},
    ]
    for body in bodies:
        r = httpx.post(url, json=body, headers=gateway.auth)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["message"] and r.json()["error"]["type"]
    traced = gateway.traces(len(bodies))
    assert [t["observations"][0]["attributes"]["gateway.http_status"] for t in traced] == [400] * 5


def test_body_over_limit_is_413(tmp_path: Path, upstream: SimulatedUpstream) -> None:
    gw = start_gateway(
        tmp_path,
        upstream,
        [{"name": "sim", "provider": "sim", "model": "sim"}],
        env={"PILOTHOUSE_MAX_BODY_BYTES": "2000"},
    )
    try:
        r = httpx.post(
            gw.base_url + "/chat/completions",
            headers=gw.auth,
            json={"model": "sim", "messages": [{"role": "user", "content": "x" * 5000}]},
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    finally:
        gw.server.stop()
