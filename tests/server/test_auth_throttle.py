"""Issue 21 class 12: the failed-authentication throttle, in one process and shared through Redis."""

from __future__ import annotations

import asyncio
import uuid

from pilothouse.server.throttle import FailureThrottle
from tests.gateway.test_limits import redis_url  # noqa: F401  # the fixture (skips without Redis)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_buckets_refill_and_keep_addresses_and_prefixes_apart() -> None:
    clock = Clock()
    throttle = FailureThrottle(burst=2, per_minute=6, clock=clock)  # one token per 10 s

    async def run() -> None:
        assert throttle.retry_after_s("10.0.0.1", "ph-aaaaaaa") == 0
        await throttle.failed("10.0.0.1", "ph-aaaaaaa")
        await throttle.failed("10.0.0.1", "ph-bbbbbbb")
        assert throttle.retry_after_s("10.0.0.1", None) == 10.0  # the address's bucket is empty
        assert throttle.retry_after_s("10.0.0.2", "ph-aaaaaaa") == 0  # that prefix failed once only
        await throttle.failed("10.0.0.3", "ph-aaaaaaa")
        assert throttle.retry_after_s("10.0.0.9", "ph-aaaaaaa") == 10.0  # the prefix's own bucket
        clock.now += 10
        assert throttle.retry_after_s("10.0.0.1", None) == 0  # one token back
        assert throttle.retry_after_s("10.0.0.9", "ph-aaaaaaa") == 0

    asyncio.run(run())


def test_processes_share_the_count_through_redis(redis_url: str) -> None:  # noqa: F811
    address = f"198.51.100.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    clock = Clock()

    async def run() -> None:
        first = FailureThrottle(burst=3, per_minute=1, redis_url=redis_url, clock=clock)
        second = FailureThrottle(burst=3, per_minute=1, redis_url=redis_url, clock=clock)
        try:
            await first.failed(address, None)
            await first.failed(address, None)
            await second.failed(address, None)
            # each process alone has tokens left, but together they used the burst
            assert first.retry_after_s(address, None) == 0 and second.retry_after_s(address, None) == 0
            await second.failed(address, None)
            assert second.retry_after_s(address, None) > 0  # the shared window is over its allowance
        finally:
            await first.close()
            await second.close()

    asyncio.run(run())


def test_redis_down_falls_back_to_the_process_count() -> None:
    clock = Clock()

    async def run() -> None:
        throttle = FailureThrottle(burst=1, per_minute=1, redis_url="redis://127.0.0.1:1/0", clock=clock)
        await throttle.failed("10.1.1.1", None)  # logged, not raised
        assert throttle.retry_after_s("10.1.1.1", None) > 0
        await throttle.close()

    asyncio.run(run())
