"""Faults: dead deployments, fallbacks, 429 with Retry-After, a stream cut mid-way."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from pilothouse.testing import SimConfig, SimulatedUpstream, free_port
from tests.gateway.conftest import start_gateway

MESSAGES = [{"role": "user", "content": "hello there"}]


def _deployment(
    upstream: SimulatedUpstream, name: str, headers: dict[str, str] | None = None
) -> dict[str, object]:
    return {
        "name": name,
        "provider": "openai",
        "model": name,
        "base_url": upstream.base_url + "/v1",
        "options": {"headers": headers or {}},
    }


def test_dead_deployment_and_fallback(tmp_path: Path, upstream: SimulatedUpstream) -> None:
    models = [
        _deployment(upstream, "flaky", {"x-sim-status": "500"}),  # every call fails
        _deployment(upstream, "steady"),
        _deployment(upstream, "overloaded", {"x-sim-status": "429"}),
    ]
    gw = start_gateway(tmp_path, upstream, models, fallbacks={"flaky": ["steady"], "overloaded": []})
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
        reply = client.chat.completions.create(model="flaky", messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.model == "steady"
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="overloaded", messages=MESSAGES)  # type: ignore[arg-type]
        assert info.value.response.headers["retry-after"] == "1"
        traces = {t["observations"][0]["request_model"]: t["observations"][0] for t in gw.traces(2)}
        attempts = traces["flaky"]["attributes"]["gateway.attempts"]
        assert [a["status"] for a in attempts] == [500, 500, 500, 200]  # 3 tries, then the fallback
        assert traces["flaky"]["model"] == "steady" and traces["flaky"]["status"] == "ok"
        metrics = httpx.get(gw.server.base_url + "/metrics").text
        flaky_id = f"openai/flaky@{upstream.base_url}/v1"
        assert (
            f'pilothouse_gateway_attempts_total{{model="flaky",deployment="{flaky_id}",status="500"}} 3'
            in metrics
        )
        assert 'pilothouse_gateway_requests_total{model="overloaded"' in metrics
        assert "pilothouse_gateway_request_duration_seconds_bucket" in metrics
        assert f'pilothouse_deployment_circuit_state{{model="flaky",deployment="{flaky_id}"}} 0' in metrics
        health = httpx.get(gw.server.base_url + "/api/deployments", headers=gw.auth).json()["data"]
        flaky = next(h for h in health if h["model"] == "flaky")
        assert flaky["failures"] == 3 and flaky["consecutive_failures"] == 3 and flaky["state"] == "closed"
        limited = traces["overloaded"]
        assert (
            limited["status"] == "error"
            and [a["status"] for a in limited["attributes"]["gateway.attempts"]] == [429] * 3
        )
    finally:
        gw.server.stop()


def test_stream_cut_midway(tmp_path: Path, upstream: SimulatedUpstream) -> None:
    gw = start_gateway(tmp_path, upstream, [_deployment(upstream, "cut", {"x-sim-drop-after": "3"})])
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
        received = []
        with pytest.raises(openai.APIError):
            for chunk in client.chat.completions.create(model="cut", messages=MESSAGES, stream=True):  # type: ignore[arg-type]
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
        assert len(received) == 3
        (trace,) = gw.traces(1)
        generation = trace["observations"][0]
        assert generation["status"] == "error" and "after the first chunk" in generation["status_message"]
        assert generation["output"] == "".join(received)
    finally:
        gw.server.stop()


@pytest.mark.slow  # three tries wait out the first-token timeout
def test_timeouts_are_retried_then_answered_504(tmp_path: Path, upstream: SimulatedUpstream) -> None:
    slow = _deployment(upstream, "slow", {"x-sim-latency-ms": "2000"})
    slow["options"]["first_token_timeout_s"] = 0.3  # type: ignore[index]
    gw = start_gateway(tmp_path, upstream, [slow])
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="slow", messages=MESSAGES)  # type: ignore[arg-type]
        assert info.value.status_code == 504
        (trace,) = gw.traces(1)
        attempts = trace["observations"][0]["attributes"]["gateway.attempts"]
        # each try gave up waiting for the first token (the upstream answers after 2 s: a 200 otherwise)
        assert [a["status"] for a in attempts] == [504, 504, 504]
        assert all(a["error"] == "upstream timed out (ReadTimeout)" for a in attempts), attempts
    finally:
        gw.server.stop()


def test_client_disconnect_cancels_the_upstream_stream(tmp_path: Path) -> None:
    with SimulatedUpstream(SimConfig(tokens_per_s=20, output_tokens=400)) as slow_upstream:
        gw = start_gateway(tmp_path, slow_upstream, [_deployment(slow_upstream, "long")])
        try:
            with httpx.stream(
                "POST",
                gw.base_url + "/chat/completions",
                json={"model": "long", "messages": MESSAGES, "stream": True},
                headers=gw.auth,
            ) as response:
                lines = response.iter_lines()
                for _ in range(4):
                    next(lines)
            # the client left after ~4 of 400 tokens (20 s of streaming): the gateway must drop the upstream
            deadline = time.monotonic() + 60  # a safety net: the upstream sees the disconnect long before
            while slow_upstream.streams_aborted == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert slow_upstream.streams_aborted == 1 and slow_upstream.streams_completed == 0
            (trace,) = gw.traces(1)
            generation = trace["observations"][0]
            assert generation["status"] == "error" and "client disconnected" in generation["status_message"]
        finally:
            gw.server.stop()


@pytest.mark.slow  # waits out the breaker's cool-down
def test_breaker_opens_moves_traffic_and_recovers(tmp_path: Path, upstream: SimulatedUpstream) -> None:
    models = [_deployment(upstream, "blue"), _deployment(upstream, "green")]
    for m in models:
        m["name"] = "app"
    config_router = {"retries": 2, "backoff_s": 0.01, "breaker_failures": 2, "breaker_cooldown_s": 1}
    gw = start_gateway(tmp_path, upstream, models, router=config_router)
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
        upstream.failing_models.add("blue")
        served = [client.chat.completions.create(model="app", messages=MESSAGES).model for _ in range(12)]  # type: ignore[arg-type]
        assert set(served) == {"green"}  # every call answered, by the healthy deployment
        health = {
            h["upstream_model"]: h
            for h in httpx.get(gw.server.base_url + "/api/deployments", headers=gw.auth).json()["data"]
        }
        assert health["blue"]["state"] == "open" and health["blue"]["failures"] == 2, health
        upstream.failing_models.discard("blue")
        time.sleep(1.1)  # cool-down over: the next request to blue is the half-open probe
        served = [client.chat.completions.create(model="app", messages=MESSAGES).model for _ in range(20)]  # type: ignore[arg-type]
        assert "blue" in served
        health = {
            h["upstream_model"]: h
            for h in httpx.get(gw.server.base_url + "/api/deployments", headers=gw.auth).json()["data"]
        }
        assert health["blue"]["state"] == "closed"
    finally:
        gw.server.stop()


@pytest.mark.slow  # waits out the total timeout
def test_the_total_timeout_covers_the_whole_stream(tmp_path: Path) -> None:
    # 400 tokens at 20 tokens/s take 20 s; the router's total timeout is 1 s
    with SimulatedUpstream(SimConfig(tokens_per_s=20, output_tokens=400)) as slow_upstream:
        gw = start_gateway(
            tmp_path, slow_upstream, [_deployment(slow_upstream, "long")], router={"timeout_s": 1.0}
        )
        try:
            with httpx.stream(
                "POST",
                gw.base_url + "/chat/completions",
                json={"model": "long", "messages": MESSAGES, "stream": True},
                headers=gw.auth,
            ) as response:
                events = [
                    json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
                ]
            # the timeout ended the stream mid-way: after its first tokens, long before its 400th
            *chunks, last = events
            content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
            assert 0 < len(content) < 400
            error = last["error"]
            assert error["code"] == "timeout" and "total timeout of 1 s" in error["message"]
            (trace,) = gw.traces(1)
            generation = trace["observations"][0]
            assert generation["status"] == "error" and "total timeout" in generation["status_message"]
            deadline = time.monotonic() + 60  # a safety net: and the upstream stream was dropped
            while slow_upstream.streams_aborted == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert slow_upstream.streams_aborted == 1
        finally:
            gw.server.stop()


def test_a_failed_fallback_names_every_model_tried(tmp_path: Path, upstream: SimulatedUpstream) -> None:
    # The client asked for "primary"; its deployment is down and so is the fallback's. The error used
    # to carry the fallback's failure alone, naming a model (and provider) the client never chose.
    models = [
        {**_deployment(upstream, "primary"), "base_url": f"http://127.0.0.1:{free_port()}/v1"},
        _deployment(upstream, "backup", {"x-sim-status": "503"}),
    ]
    gw = start_gateway(tmp_path, upstream, models, fallbacks={"primary": ["backup"]})
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model="primary", messages=MESSAGES)  # type: ignore[arg-type]
        message = raised.value.message
        assert "Every model failed, in order: primary (3 attempts: upstream unreachable" in message, message
        assert "; backup (3 attempts: " in message, message
        assert message.index("primary (") < message.index("backup (")
    finally:
        gw.server.stop()
