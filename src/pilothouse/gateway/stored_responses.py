"""Responses API answers kept for ``previous_response_id`` and ``GET /v1/responses/{id}``: in this
process, per project (another project's id is not found), bounded in count and bytes (the oldest go
first) and in age. Kept serialised, so the bound on bytes is exact and a stored answer cannot be
changed through a reference to it."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A Response object and the conversation it ended (the chat messages a next turn continues)."""

    response: dict[str, Any]
    messages: list[dict[str, Any]]


class ResponseStore:
    """At most ``max_count`` responses and ``max_bytes`` bytes, each kept ``ttl_s`` seconds."""

    def __init__(
        self, max_count: int, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, project_id: str, stored: StoredResponse) -> bool:
        """Keep ``stored`` (False when it alone is larger than the whole store may hold)."""
        data = orjson.dumps({"response": stored.response, "messages": stored.messages})
        if self.max_count == 0 or len(data) > self.max_bytes:
            return False
        key = (project_id, str(stored.response["id"]))
        self._drop(key)
        self._items[key] = (self._clock() + self.ttl_s, data)
        self.bytes += len(data)
        self._expire()
        while len(self._items) > self.max_count or self.bytes > self.max_bytes:
            self._drop(next(iter(self._items)))
        return True

    def get(self, project_id: str, response_id: str) -> StoredResponse | None:
        """The stored response of this project, or None (unknown, expired, dropped or another's)."""
        self._expire()
        entry = self._items.get((project_id, response_id))
        if entry is None:
            return None
        value = orjson.loads(entry[1])
        return StoredResponse(value["response"], value["messages"])

    def delete(self, project_id: str, response_id: str) -> bool:
        """Forget a stored response; whether there was one."""
        return self._drop((project_id, response_id))

    def _drop(self, key: tuple[str, str]) -> bool:
        entry = self._items.pop(key, None)
        if entry is None:
            return False
        self.bytes -= len(entry[1])
        return True

    def _expire(self) -> None:
        now = self._clock()
        while self._items:
            key, (expires, _) = next(iter(self._items.items()))
            if expires > now:
                break
            self._drop(key)
