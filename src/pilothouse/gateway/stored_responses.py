"""Responses API answers kept for ``previous_response_id`` and ``GET /v1/responses/{id}``: in Redis
when configured (shared by every process and server), else in this process, per project (another
project's id is not found), bounded in count and bytes (the oldest go first) and in age. Kept
serialised, so the bound on bytes is exact and a stored answer cannot be changed through a reference
to it."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from pilothouse.gateway.redis_client import RedisUnavailable, connect_redis, redis_errors


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A Response object, the conversation it ended (the chat messages a next turn continues) and
    the request's input items."""

    response: dict[str, Any]
    messages: list[dict[str, Any]]
    input_items: list[dict[str, Any]] = field(default_factory=list)


class ResponseStore:
    """At most ``max_count`` responses and ``max_bytes`` bytes, each kept ``ttl_s`` seconds. Past a
    bound, the project holding the most bytes loses its oldest first: a project that stores a flood
    of responses evicts its own, not another project's."""

    def __init__(
        self, max_count: int, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._projects: dict[str, OrderedDict[str, tuple[float, bytes]]] = {}
        self._project_bytes: dict[str, int] = {}
        self._count = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self._count

    def put(self, project_id: str, stored: StoredResponse) -> bool:
        """Keep ``stored`` (False when it alone is larger than the whole store may hold)."""
        data = _encode(stored)
        if self.max_count == 0 or len(data) > self.max_bytes:
            return False
        response_id = str(stored.response["id"])
        self._drop(project_id, response_id)
        self._projects.setdefault(project_id, OrderedDict())[response_id] = (self._clock() + self.ttl_s, data)
        self._project_bytes[project_id] = self._project_bytes.get(project_id, 0) + len(data)
        self._count += 1
        self.bytes += len(data)
        self.expire()
        while self._count > self.max_count or self.bytes > self.max_bytes:
            largest = max(self._project_bytes, key=self._project_bytes.__getitem__)
            self._drop(largest, next(iter(self._projects[largest])))
        return True

    def get(self, project_id: str, response_id: str) -> StoredResponse | None:
        """The stored response of this project, or None (unknown, expired, dropped or another's)."""
        items = self._projects.get(project_id)
        entry = items.get(response_id) if items is not None else None
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._drop(project_id, response_id)
            return None
        return _decode(entry[1])

    def delete(self, project_id: str, response_id: str) -> bool:
        """Forget a stored response; whether there was one."""
        return self._drop(project_id, response_id)

    async def aput(self, project_id: str, stored: StoredResponse) -> bool:
        """:meth:`put`, for callers of either store."""
        return self.put(project_id, stored)

    async def aget(self, project_id: str, response_id: str) -> StoredResponse | None:
        """:meth:`get`, for callers of either store."""
        return self.get(project_id, response_id)

    async def adelete(self, project_id: str, response_id: str) -> bool:
        """:meth:`delete`, for callers of either store."""
        return self.delete(project_id, response_id)

    async def close(self) -> None:
        """Nothing to release."""

    def expire(self) -> None:
        """Forget the responses past their age (each project's oldest first)."""
        now = self._clock()
        for project_id, items in list(self._projects.items()):
            while items:
                response_id, (expires, _) = next(iter(items.items()))
                if expires > now:
                    break
                self._drop(project_id, response_id)

    def _drop(self, project_id: str, response_id: str) -> bool:
        items = self._projects.get(project_id)
        entry = items.pop(response_id, None) if items is not None else None
        if entry is None:
            return False
        self._count -= 1
        self.bytes -= len(entry[1])
        self._project_bytes[project_id] -= len(entry[1])
        if not items:
            del self._projects[project_id], self._project_bytes[project_id]
        return True


class StoredResponses(Protocol):
    """Where Responses API answers are kept: this process (:class:`ResponseStore`) or Redis
    (:class:`RedisResponseStore`, shared by every process and server)."""

    async def aput(self, project_id: str, stored: StoredResponse) -> bool:
        """Keep ``stored``; False when it is too large to keep."""
        ...

    async def aget(self, project_id: str, response_id: str) -> StoredResponse | None:
        """This project's stored response, or None."""
        ...

    async def adelete(self, project_id: str, response_id: str) -> bool:
        """Forget a stored response; whether there was one."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _encode(stored: StoredResponse) -> bytes:
    return orjson.dumps(
        {"response": stored.response, "messages": stored.messages, "input_items": stored.input_items}
    )


def _decode(data: bytes) -> StoredResponse:
    value = orjson.loads(data)
    return StoredResponse(value["response"], value["messages"], value["input_items"])


class RedisResponseStore:
    """Stored responses in Redis, each under its project and id for ``ttl_s`` seconds (at most
    ``max_bytes`` each): a follow-up turn may land on any process. Redis's own memory limit and
    eviction policy bound the total; a Redis fault is :class:`RedisUnavailable` (a 503)."""

    def __init__(self, url: str, max_bytes: int, ttl_s: float, prefix: str = "pilothouse:responses:") -> None:
        self._redis: Any = connect_redis(url)
        self.max_bytes = max_bytes
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.prefix = prefix

    def _key(self, project_id: str, response_id: str) -> bytes:
        # the project's length first: no project id and response id pair can spell another's key
        return f"{self.prefix}{len(project_id)}:{project_id}:{response_id}".encode()

    async def aput(self, project_id: str, stored: StoredResponse) -> bool:
        """Keep ``stored`` (False when it alone is larger than ``max_bytes``)."""
        data = _encode(stored)
        if len(data) > self.max_bytes:
            return False
        try:
            await self._redis.set(self._key(project_id, str(stored.response["id"])), data, px=self.ttl_ms)
        except redis_errors() as exc:
            raise RedisUnavailable("stored responses", exc) from None
        return True

    async def aget(self, project_id: str, response_id: str) -> StoredResponse | None:
        """The stored response of this project, or None (unknown, expired or another's)."""
        try:
            data = await self._redis.get(self._key(project_id, response_id))
        except redis_errors() as exc:
            raise RedisUnavailable("stored responses", exc) from None
        return None if data is None else _decode(data)

    async def adelete(self, project_id: str, response_id: str) -> bool:
        """Forget a stored response; whether there was one."""
        try:
            return bool(await self._redis.delete(self._key(project_id, response_id)))
        except redis_errors() as exc:
            raise RedisUnavailable("stored responses", exc) from None

    async def close(self) -> None:
        """Release the connection pool."""
        await self._redis.aclose()
