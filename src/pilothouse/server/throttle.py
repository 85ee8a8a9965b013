"""Throttling failed authentication: a token bucket of failures per client address and per key prefix,
so that guessing API keys or UI logins goes at a few attempts a minute instead of hundreds a second.

Only failures take tokens; a caller with an empty bucket is refused (429 with ``Retry-After``) before
its key is looked up, whether or not the key is good (otherwise the answer would tell a guesser when a
guess was right). One exception (``KeyAuthenticator``): an API key that authenticated in this process
within the last hour still passes, so that one client retrying a revoked key behind a shared proxy
does not lock every other client of that proxy out; a key is 256 random bits, so this tells a guesser
nothing it could use (the admin key, which a person chooses, has no such exception). Checking a bucket
is two dictionary reads in this process: a valid request never waits on anything else.

With Redis configured, failures are also counted in shared one-minute windows, so that several server
processes together allow about what one would; a failure to reach Redis falls back to this process's
own count (logged)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pilothouse.server")

MAX_TRACKED = 100_000  # buckets per kind before the full ones are forgotten
_WINDOW_S = 60


class _Buckets:
    """Token buckets by subject: ``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(self, burst: int, rate: float, clock: Callable[[], float]) -> None:
        self.burst, self.rate, self.clock = float(burst), rate, clock
        self.levels: dict[str, tuple[float, float]] = {}  # subject -> (tokens, at)
        self.blocked_until: dict[str, float] = {}  # from the shared (Redis) count

    def _tokens(self, subject: str, now: float) -> float:
        level = self.levels.get(subject)
        if level is None:
            return self.burst
        return min(self.burst, level[0] + (now - level[1]) * self.rate)

    def wait_s(self, subject: str) -> float:
        """Seconds before ``subject`` may try again (0: now)."""
        if subject not in self.levels and subject not in self.blocked_until:
            return 0.0
        now = self.clock()
        wait = max(0.0, self.blocked_until.get(subject, 0.0) - now)
        tokens = self._tokens(subject, now)
        if tokens < 1:
            wait = max(wait, (1 - tokens) / self.rate)
        return wait

    def take(self, subject: str) -> None:
        now = self.clock()
        if len(self.levels) >= MAX_TRACKED:
            self._forget_full(now)
        self.levels[subject] = (max(0.0, self._tokens(subject, now) - 1), now)

    def _forget_full(self, now: float) -> None:
        full = [s for s in self.levels if self._tokens(s, now) >= self.burst]
        for subject in full:
            del self.levels[subject]
        if len(self.levels) >= MAX_TRACKED:  # a flood of distinct subjects: start again
            self.levels.clear()
        self.blocked_until = {s: t for s, t in self.blocked_until.items() if t > now}


class FailureThrottle:
    """Failed authentications per client address and per key prefix (``server.auth_failures_*``)."""

    def __init__(
        self,
        burst: int = 20,
        per_minute: float = 20.0,
        redis_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._addresses = _Buckets(burst, per_minute / 60.0, clock)
        self._prefixes = _Buckets(burst, per_minute / 60.0, clock)
        self.burst = burst
        self.clock = clock
        self._redis: Any = None
        if redis_url:
            from pilothouse.gateway.redis_client import connect_redis

            self._redis = connect_redis(redis_url)

    def retry_after_s(self, address: str, prefix: str | None) -> float:
        """Seconds before this client (or this key prefix) may authenticate again; 0 when it may now."""
        wait = self._addresses.wait_s(address)
        if prefix is not None:
            wait = max(wait, self._prefixes.wait_s(prefix))
        return wait

    async def failed(self, address: str, prefix: str | None) -> None:
        """Count a failed authentication of ``address`` (with a key starting ``prefix``)."""
        self._addresses.take(address)
        if prefix is not None:
            self._prefixes.take(prefix)
        if self._redis is not None:
            await self._count_shared(address, prefix)

    async def _count_shared(self, address: str, prefix: str | None) -> None:
        subjects = [(self._addresses, f"pilothouse:authfail:ip:{address}", address)]
        if prefix is not None:
            subjects.append((self._prefixes, f"pilothouse:authfail:key:{prefix}", prefix))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, key, _ in subjects:
                    pipe.incr(key)
                    pipe.expire(key, _WINDOW_S, nx=True)
                    pipe.pttl(key)
                results = await pipe.execute()
        except Exception as exc:  # the in-process count still holds
            log.warning("cannot count failed authentications in Redis (%s); counting in this process", exc)
            return
        for index, (buckets, _, subject) in enumerate(subjects):
            count, ttl_ms = results[index * 3], results[index * 3 + 2]
            if count > self.burst:
                buckets.blocked_until[subject] = self.clock() + max(ttl_ms, 1000) / 1000.0

    async def close(self) -> None:
        """Close the Redis connection, if any."""
        if self._redis is not None:
            await self._redis.aclose()
