"""One way to open Redis for the gateway's shared state (rate limits, budgets, the response cache), and
what a Redis fault becomes.

A blocking pool: under a burst, callers wait for one of ``max_connections`` connections instead of
failing with "Too many connections" (redis-py's default pool raises). Short socket timeouts: a Redis
that is gone fails a call in milliseconds to seconds, never holds it for long. Every Redis error of the
shared state is raised as :class:`RedisUnavailable`, naming the feature; the gateway answers it 503
``redis_unavailable`` or goes on without the feature, as configured (docs/settings.md, "Redis faults").
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class RedisUnavailable(Exception):
    """Redis, which holds ``feature`` (``rate limits``, ``budgets``, ``response cache``), could not
    be used: unreachable, timed out or answering errors (restarting, out of memory)."""

    def __init__(self, feature: str, cause: BaseException) -> None:
        super().__init__(f"Redis, which holds the {feature}, is unavailable: {cause}")
        self.feature = feature
        self.cause = cause


def connect_redis(
    url: str, max_connections: int = 64, timeout_s: float = 5.0, socket_timeout_s: float = 2.0
) -> Any:
    """An asyncio Redis client over a blocking connection pool."""
    import redis.asyncio as redis

    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_connect_timeout=socket_timeout_s,
        socket_timeout=socket_timeout_s,
    )
    return redis.Redis(connection_pool=pool)


def redis_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a Redis call raises when Redis is unreachable or failing (redis-py's, and the
    socket's own)."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


class RedisProbe:
    """Whether the Redis the gateway shares its state through answers, for ``/health``: one PING at
    most every ``every_s`` (the answer is reused), given ``timeout_s`` to answer."""

    def __init__(self, url: str, every_s: float = 1.0, timeout_s: float = 0.25) -> None:
        self._redis: Any = connect_redis(url, max_connections=2, socket_timeout_s=timeout_s)
        self._every_s = every_s
        self._timeout_s = timeout_s
        self._checked = -1e18
        self._error: str | None = None
        self._lock = asyncio.Lock()

    async def error(self) -> str | None:
        """None when Redis answered the last PING; otherwise why it did not."""
        async with self._lock:
            if time.monotonic() - self._checked >= self._every_s:
                try:
                    async with asyncio.timeout(self._timeout_s):
                        await self._redis.ping()
                    self._error = None
                except redis_errors() as exc:
                    self._error = f"redis unreachable: {type(exc).__name__}: {exc}"[:300]
                self._checked = time.monotonic()
            return self._error

    async def close(self) -> None:
        """Release the connection."""
        await self._redis.aclose()
