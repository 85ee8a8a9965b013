"""Circuit breakers shared through Redis (gateway/shared_breakers.py): two routers, as two processes
would hold them, on one event loop and a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from pilothouse.gateway.config import gateway_config as parse_config
from pilothouse.gateway.router import Attempt, Router
from pilothouse.gateway.shared_breakers import SharedBreakers
from pilothouse.providers.base import ProviderError
from pilothouse.providers.sim import SimProvider
from tests.server.test_workers import redis_url  # noqa: F401 - the fixture


def _router(model: str) -> Router:
    config = parse_config(
        {
            "models": [{"name": "m", "provider": "sim", "model": model}],
            "router": {"retries": 0, "breaker_failures": 2, "breaker_cooldown_s": 600},
        }
    )
    return Router(config)


def _state(router: Router) -> str:
    return str(router.health_report()[0]["state"])


async def _until(check: object, tries: int = 400) -> None:
    for _ in range(tries):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)


def test_a_breaker_opened_by_one_process_opens_in_the_others_and_one_started_later(
    redis_url: str,  # noqa: F811 - the fixture
) -> None:
    model = f"dead-{uuid.uuid4().hex[:8]}"  # a deployment id of its own in the shared Redis

    async def run() -> tuple[str, str, str, int]:
        loop = asyncio.get_running_loop()
        failing, watching = _router(model), _router(model)
        provider = next(iter(failing.providers.values()))
        assert isinstance(provider, SimProvider)
        provider.error_rate = 1.0
        shared = [SharedBreakers(failing, redis_url), SharedBreakers(watching, redis_url)]
        for breakers in shared:
            breakers.start(loop)
        try:
            await asyncio.sleep(0.2)  # both subscribed
            for _ in range(2):
                attempts: list[Attempt] = []
                with contextlib.suppress(ProviderError):
                    await failing.chat(
                        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, attempts
                    )
            await _until(lambda: _state(watching) == "open")
            late = _router(model)  # a process that starts while the breaker is open
            shared.append(SharedBreakers(late, redis_url))
            shared[-1].start(loop)
            await _until(lambda: _state(late) == "open")
            return _state(failing), _state(watching), _state(late), watching.health_report()[0]["requests"]
        finally:
            for breakers in shared:
                await asyncio.to_thread(breakers.stop)

    assert asyncio.run(run()) == ("open", "open", "open", 0)


def test_a_probe_that_succeeds_closes_the_breaker_everywhere(redis_url: str) -> None:  # noqa: F811
    model = f"back-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        one, other = _router(model), _router(model)
        shared = [SharedBreakers(one, redis_url), SharedBreakers(other, redis_url)]
        for breakers in shared:
            breakers.start(loop)
        try:
            await asyncio.sleep(0.2)
            health = next(iter(one.health.values()))
            health.start()
            health.failed("down")
            health.start()
            health.failed("down")  # opens here, then everywhere
            await _until(lambda: _state(other) == "open")
            health.opened_at -= 601  # the cool-down is over: one probe
            health.start()
            health.succeeded(5.0)
            await _until(lambda: _state(other) == "closed")
            return _state(one), _state(other)
        finally:
            for breakers in shared:
                await asyncio.to_thread(breakers.stop)

    assert asyncio.run(run()) == ("closed", "closed")
