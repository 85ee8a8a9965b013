"""One way to open Redis for the gateway's shared state (rate limits, budgets, the response cache).

A blocking pool: under a burst, callers wait for one of ``max_connections`` connections instead of
failing with "Too many connections" (redis-py's default pool raises)."""

from __future__ import annotations

from typing import Any


def connect_redis(url: str, max_connections: int = 64, timeout_s: float = 5.0) -> Any:
    """An asyncio Redis client over a blocking connection pool."""
    import redis.asyncio as redis

    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout_s)
    return redis.Redis(connection_pool=pool)
