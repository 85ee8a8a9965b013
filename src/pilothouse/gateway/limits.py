"""Per-key rate limits: requests and tokens per minute, in fixed one-minute windows.

In-process by default; with Redis configured, every gateway process counts in the same Redis keys
through one atomic script, so the limits are exact across processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pilothouse.gateway.redis_client import RedisUnavailable, connect_redis, redis_errors

WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """Whether a request may go ahead, and the figures for the ``x-ratelimit-*`` headers."""

    allowed: bool
    exceeded: str | None = None  # "requests" or "tokens" when refused
    retry_after_s: float = 0.0
    requests: int = 0  # counted in this window (this request included when allowed)
    tokens: int = 0
    reset_s: float = 0.0  # until the window's counts start over (``x-ratelimit-reset-*``)


class RateLimiter(Protocol):
    """Counts requests and tokens per key and minute."""

    async def admit(self, key_id: str, rpm: int | None, tpm: int | None) -> LimitDecision:
        """Count this request if the key is under both limits; refuse it otherwise."""
        ...

    async def add_tokens(self, key_id: str, tokens: int) -> None:
        """Count the tokens a finished request used."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class LocalRateLimiter:
    """Limits within this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, int], list[int]] = {}
        self._lock = asyncio.Lock()

    def _window(self) -> tuple[int, float]:
        now = self._clock()
        window = int(now // WINDOW_S)
        return window, (window + 1) * WINDOW_S - now

    async def admit(self, key_id: str, rpm: int | None, tpm: int | None) -> LimitDecision:
        window, left = self._window()
        async with self._lock:
            if len(self._windows) > 100_000:
                self._windows = {k: v for k, v in self._windows.items() if k[1] >= window}
            counts = self._windows.setdefault((key_id, window), [0, 0])
            if tpm is not None and counts[1] >= tpm:
                return LimitDecision(False, "tokens", left, counts[0], counts[1], left)
            if rpm is not None and counts[0] >= rpm:
                return LimitDecision(False, "requests", left, counts[0], counts[1], left)
            counts[0] += 1
            return LimitDecision(True, None, 0.0, counts[0], counts[1], left)

    async def add_tokens(self, key_id: str, tokens: int) -> None:
        window, _ = self._window()
        async with self._lock:
            self._windows.setdefault((key_id, window), [0, 0])[1] += tokens

    async def close(self) -> None:
        return None


# KEYS: request counter, token counter. ARGV: rpm (-1: none), tpm (-1: none), ttl seconds.
_ADMIT = """
local tokens = tonumber(redis.call('GET', KEYS[2]) or '0')
local requests = tonumber(redis.call('GET', KEYS[1]) or '0')
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm >= 0 and tokens >= tpm then return {0, 2, requests, tokens} end
if rpm >= 0 and requests >= rpm then return {0, 1, requests, tokens} end
requests = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, 0, requests, tokens}
"""


class RedisRateLimiter:
    """Limits shared by every process using the same Redis."""

    def __init__(
        self, url: str, clock: Callable[[], float] = time.time, prefix: str = "pilothouse:rl"
    ) -> None:
        self._redis: Any = connect_redis(url)
        self._admit_script = self._redis.register_script(_ADMIT)
        self._clock = clock
        self._prefix = prefix

    def _keys(self, key_id: str) -> tuple[list[str], float]:
        now = self._clock()
        window = int(now // WINDOW_S)
        base = f"{self._prefix}:{key_id}:{window}"
        return [f"{base}:req", f"{base}:tok"], (window + 1) * WINDOW_S - now

    async def admit(self, key_id: str, rpm: int | None, tpm: int | None) -> LimitDecision:
        keys, left = self._keys(key_id)
        try:
            allowed, reason, requests, tokens = await self._admit_script(
                keys=keys, args=[-1 if rpm is None else rpm, -1 if tpm is None else tpm, WINDOW_S * 2]
            )
        except redis_errors() as exc:
            raise RedisUnavailable("rate limits", exc) from exc
        exceeded = {0: None, 1: "requests", 2: "tokens"}[int(reason)]
        return LimitDecision(
            bool(allowed), exceeded, 0.0 if allowed else left, int(requests), int(tokens), left
        )

    async def add_tokens(self, key_id: str, tokens: int) -> None:
        keys, _ = self._keys(key_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrby(keys[1], tokens)
                pipe.expire(keys[1], WINDOW_S * 2)
                await pipe.execute()
        except redis_errors() as exc:
            raise RedisUnavailable("rate limits", exc) from exc

    async def close(self) -> None:
        await self._redis.aclose()


def make_rate_limiter(redis_url: str | None) -> RateLimiter:
    """Redis-backed when a URL is given, in-process otherwise."""
    return RedisRateLimiter(redis_url) if redis_url else LocalRateLimiter()
