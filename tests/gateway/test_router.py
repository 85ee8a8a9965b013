"""The router on in-process sim deployments: breaker, traffic moving and recovering, strategies."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from pilothouse.gateway.config import ConfigError
from pilothouse.gateway.config import gateway_config as parse_config
from pilothouse.gateway.health import CircuitState
from pilothouse.gateway.router import Attempt, Router
from pilothouse.providers.base import ProviderError
from pilothouse.providers.sim import SimProvider

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _no_sleep(_seconds: float) -> None:
    return None


def router(strategy: str = "weighted", **router_settings: Any) -> tuple[Router, Clock]:
    config = parse_config(
        {
            "models": [
                {"name": "m", "provider": "sim", "model": "a"},
                {"name": "m", "provider": "sim", "model": "b"},
            ],
            "router": {
                "strategy": strategy,
                "breaker_failures": 3,
                "breaker_cooldown_s": 30,
                **router_settings,
            },
        }
    )
    clock = Clock()
    return Router(config, sleep=_no_sleep, rng=random.Random(1), clock=clock), clock


def sim(r: Router, model: str) -> SimProvider:
    provider = next(p for d, p in r.providers.items() if d.model == model)
    assert isinstance(provider, SimProvider)
    return provider


def served_by(r: Router, n: int) -> list[list[Attempt]]:
    async def run() -> list[list[Attempt]]:
        out = []
        for _ in range(n):
            attempts: list[Attempt] = []
            await r.chat(dict(REQUEST), attempts)
            out.append(attempts)
        return out

    return asyncio.run(run())


def test_dead_deployment_opens_its_breaker_and_recovers() -> None:
    r, clock = router()
    sim(r, "a").error_rate = 1.0
    runs = served_by(r, 20)
    assert all(attempts[-1].model == "b" and attempts[-1].status == 200 for attempts in runs)
    failures_at_a = sum(1 for attempts in runs for a in attempts if a.model == "a")
    assert failures_at_a == 3  # then the breaker opened and "a" got no more traffic
    states = {h["upstream_model"]: h["state"] for h in r.health_report()}
    assert states == {"a": "open", "b": "closed"}
    # After the cool-down one probe goes to "a"; it works again, so the breaker closes.
    sim(r, "a").error_rate = 0.0
    clock.now += 31
    assert next(h for d, h in r.health.items() if d.model == "a").current_state() is CircuitState.HALF_OPEN
    runs = served_by(r, 30)
    assert any(attempts[0].model == "a" for attempts in runs)
    assert {h["upstream_model"]: h["state"] for h in r.health_report()} == {"a": "closed", "b": "closed"}


def test_failed_probe_reopens_and_all_open_is_a_503() -> None:
    r, clock = router()
    sim(r, "a").error_rate = 1.0
    sim(r, "b").error_rate = 1.0
    statuses = []
    for _ in range(4):
        with pytest.raises(ProviderError) as info:
            served_by(r, 1)
        statuses.append(info.value.status)
    # upstream errors until both breakers have opened (3 failures each), then the gateway's own 503
    assert statuses[0] == 500 and statuses[-1] == 503 and info.value.code == "deployments_unavailable"
    clock.now += 31
    with pytest.raises(ProviderError):
        served_by(r, 1)  # the probes fail: open again
    assert all(h["state"] == "open" for h in r.health_report())


def test_rate_limits_are_retried_then_surface_with_retry_after() -> None:
    r, _ = router(retries=3)
    for model in ("a", "b"):
        sim(r, model).rate_limit_rate = 1.0
    with pytest.raises(ProviderError) as info:
        served_by(r, 1)
    assert info.value.status == 429 and info.value.retry_after_s == 1.0


def test_least_busy_and_latency_strategies() -> None:
    r, _ = router("least-busy")
    a = next(d for d in r.health if d.model == "a")
    r.health[a].in_flight = 5  # "a" is busy
    assert {attempts[-1].model for attempts in served_by(r, 10)} == {"b"}
    r, _ = router("latency")
    served_by(r, 2)  # both measured once
    slow = next(d for d in r.health if d.model == "b")
    r.health[slow].latency_ewma_ms = 1000.0
    assert {attempts[-1].model for attempts in served_by(r, 5)} == {"a"}


def test_bad_router_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="strategy"):
        parse_config({"models": [], "router": {"strategy": "random-walk"}})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"models": [{"name": "x", "provider": "sim", "colour": "red"}]})
    with pytest.raises(ConfigError, match="provider"):
        parse_config({"models": [{"name": "x", "provider": "nope"}]})
    with pytest.raises(ConfigError, match="fallbacks"):
        parse_config({"models": [{"name": "x", "provider": "sim"}], "fallbacks": {"x": ["y"]}})
