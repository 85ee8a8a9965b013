"""The gateway's exact response cache: a repeated request (same project, model, messages and
parameters) is answered from the cache, streamed or not, at no cost.

The key is a SHA-256 of the request normalised (keys sorted; ``stream``, ``stream_options`` and
``user`` left out, since they change how an answer is delivered, not what it is). Entries live in
process memory (LRU with a TTL) or, with Redis configured, in Redis so every gateway process shares
them. Callers opt out per request with ``Cache-Control: no-cache`` (don't read), ``no-store`` (don't
write) or ``x-pilothouse-cache: off``.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from pilothouse.config import CacheSettings
from pilothouse.domain.money import Money
from pilothouse.gateway.redis_client import RedisUnavailable, connect_redis, redis_errors
from pilothouse.providers.anthropic_native import NATIVE

_IGNORED = frozenset({"stream", "stream_options", "user"})


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What one request allows: reading a cached answer, storing its own."""

    read: bool = True
    write: bool = True


def cache_policy(headers: Mapping[str, str]) -> CachePolicy:
    """The request's cache directives (``Cache-Control: no-cache / no-store``, ``x-pilothouse-cache``)."""
    ours = headers.get("x-pilothouse-cache", "").strip().lower()
    if ours in ("off", "no", "false", "0"):
        return CachePolicy(read=False, write=False)
    control = headers.get("cache-control", "").lower()
    return CachePolicy(read="no-cache" not in control, write="no-store" not in control)


def cache_key(project_id: str, request: Mapping[str, Any]) -> str:
    """The cache key of a chat request in a project: ``<project>:<digest>`` (entries are counted per
    project by that prefix)."""
    normalised = {k: v for k, v in request.items() if k not in _IGNORED}
    native = normalised.get(NATIVE)
    if isinstance(native, dict) and isinstance(native.get("body"), dict):  # stream or not: one answer
        normalised[NATIVE] = {**native, "body": {k: v for k, v in native["body"].items() if k != "stream"}}
    digest = hashlib.sha256(orjson.dumps(normalised, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{project_id}:{digest}"


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored answer: the OpenAI-format response and what it cost when it was made."""

    response: dict[str, Any]
    provider: str | None
    deployment: str | None
    cost: Money | None

    def dumps(self) -> bytes:
        """The entry as bytes (for Redis; the cost as float USD, exact for any one call's cost)."""
        cost = None if self.cost is None else self.cost.usd
        return orjson.dumps({"r": self.response, "p": self.provider, "d": self.deployment, "c": cost})

    @classmethod
    def loads(cls, data: bytes) -> CachedAnswer:
        """Inverse of :meth:`dumps`."""
        raw = orjson.loads(data)
        cost = None if raw["c"] is None else Money.from_usd(raw["c"])
        return cls(raw["r"], raw["p"], raw["d"], cost)


class ResponseCache(Protocol):
    """Where cached answers live."""

    async def get(self, key: str) -> CachedAnswer | None:
        """The answer stored under ``key`` and not expired, or None."""
        ...

    async def set(self, key: str, answer: CachedAnswer) -> None:
        """Store an answer."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class LocalResponseCache:
    """An in-process LRU cache with a TTL."""

    def __init__(self, settings: CacheSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self._per_project: Counter[str] = Counter()  # entries by project (a key starts with its project)

    def __len__(self) -> int:
        return len(self._entries)

    def entries_of(self, project_id: str) -> int:
        """How many entries (expired ones not yet dropped included) belong to ``project_id``."""
        return self._per_project[project_id]

    def _drop(self, key: str) -> None:
        del self._entries[key]
        self._forget(key)

    def _forget(self, key: str) -> None:
        project = key.rpartition(":")[0]
        self._per_project[project] -= 1
        if self._per_project[project] <= 0:
            del self._per_project[project]

    async def get(self, key: str) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if expires < self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return answer

    async def set(self, key: str, answer: CachedAnswer) -> None:
        if key not in self._entries:
            self._per_project[key.rpartition(":")[0]] += 1
        self._entries[key] = (self._clock() + self.settings.ttl_s, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.settings.max_entries:
            evicted, _ = self._entries.popitem(last=False)
            self._forget(evicted)

    async def close(self) -> None:
        return None


class RedisResponseCache:
    """Answers shared by every gateway process through Redis (expiring after the TTL)."""

    def __init__(self, url: str, settings: CacheSettings, prefix: str = "pilothouse:cache") -> None:
        self.settings = settings
        self._redis: Any = connect_redis(url)
        self._prefix = prefix

    async def get(self, key: str) -> CachedAnswer | None:
        try:
            data = await self._redis.get(f"{self._prefix}:{key}")
        except redis_errors() as exc:
            raise RedisUnavailable("response cache", exc) from exc
        return None if data is None else CachedAnswer.loads(data)

    async def set(self, key: str, answer: CachedAnswer) -> None:
        try:
            await self._redis.set(f"{self._prefix}:{key}", answer.dumps(), px=int(self.settings.ttl_s * 1000))
        except redis_errors() as exc:
            raise RedisUnavailable("response cache", exc) from exc

    async def close(self) -> None:
        await self._redis.aclose()


def make_response_cache(settings: CacheSettings, redis_url: str | None) -> ResponseCache | None:
    """The configured cache: None when off, shared in Redis when a URL is given."""
    if not settings.enabled:
        return None
    return RedisResponseCache(redis_url, settings) if redis_url else LocalResponseCache(settings)


def replay_chunks(response: Mapping[str, Any], piece_chars: int = 64) -> list[dict[str, Any]]:
    """A cached completion as the ``chat.completion.chunk`` objects an upstream would have streamed:
    role, content in pieces, tool calls, finish reason, then usage."""
    base = {
        "id": response.get("id", "chatcmpl-cache"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": response.get("model"),
    }
    chunks: list[dict[str, Any]] = []
    for choice in response.get("choices") or []:
        index = choice.get("index", 0)
        message = choice.get("message") or {}

        def chunk(delta: dict[str, Any], finish: str | None = None, index: int = index) -> dict[str, Any]:
            return {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

        chunks.append(chunk({"role": "assistant", "content": ""}))
        content = message.get("content") or ""
        for start in range(0, len(content), piece_chars):
            chunks.append(chunk({"content": content[start : start + piece_chars]}))
        for position, call in enumerate(message.get("tool_calls") or []):
            chunks.append(chunk({"tool_calls": [{"index": position, **call}]}))
        chunks.append(chunk({}, choice.get("finish_reason") or "stop"))
    if response.get("usage"):
        chunks.append({**base, "choices": [], "usage": response["usage"]})
    return chunks
