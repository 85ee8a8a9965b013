"""The semantic cache shared by every process of a server, and every server, of one database and Redis.

Each process answers from its own index, as before; an entry one process adds is queued, and this
module's thread publishes it on a Redis channel named by the store (Settings.store_id) and appends it to
a record of that scope key in Redis (the newest ``max_entries``, expiring ``ttl_s`` after the last
write), so a process that starts later loads the entries still live. What other processes publish is
added to the index on the event loop (``call_soon_threadsafe``): a lookup never waits for Redis. A
route switched off for low measured precision is switched off everywhere the same way, and a process
that starts within ``ttl_s`` of it starts with the route off (when its threshold and embedding model
are the ones the precision was measured with). When Redis is unreachable the cache works per process
until it is back.

An entry keeps its scope key (which hashes the project, system prompt and parameters) and its project:
a request of another project, or another server's, never gets it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from collections import deque
from typing import Any

import orjson

from pilothouse.gateway.cache import CachedAnswer
from pilothouse.gateway.redis_channel import RedisChannel
from pilothouse.gateway.semantic_cache import Added, SemanticCache

log = logging.getLogger("pilothouse.cache")
CHANNEL = "pilothouse:semantic:{scope}"  # messages: an entry ("entry") or a route switched off ("off")
ENTRIES_KEY = "pilothouse:semantic:{scope}:entries:{key}"  # list of one scope key's entry messages
SCOPES_KEY = "pilothouse:semantic:{scope}:scopes"  # sorted set: scope key -> when its newest entry expires
OFF_KEY = "pilothouse:semantic:{scope}:off"  # hash: route -> its switch-off message
_LOAD_BATCH = 200  # scope keys read per round trip when loading


class SharedSemanticCache(RedisChannel):
    """Publishes this process's semantic cache entries and switch-offs, and applies other processes'
    (``start``/``stop``)."""

    def __init__(
        self, cache: SemanticCache, redis_url: str, scope: str = "", *, poll_s: float = 0.05
    ) -> None:
        super().__init__(
            redis_url, CHANNEL.format(scope=scope), label="shared semantic cache", log=log, poll_s=poll_s
        )
        self.cache = cache
        self.scope = scope
        self.applied = 0  # entries of other processes added here
        # the outbox holds (scope key, expires at) of an entry or (route, None) of a switch-off, and the
        # message; these two are what the event loop queued, serialised by the thread
        self._entries: deque[tuple[Added, float]] = deque(maxlen=4096)  # to serialise, with expires at
        self._offs: deque[tuple[str, float, int]] = deque(maxlen=64)  # (route, precision, re-checks)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Load the live entries and listen and publish from now on; ``loop`` is the one the cache
        runs on."""
        self.cache.on_add = self._added
        self.cache.on_route_off = lambda route, precision, verified: self._offs.append(
            (route, precision, verified)
        )
        self._start_thread(loop)

    def stop(self) -> None:
        """Stop the thread (what it has not published yet is dropped: those entries stay per process)."""
        self.cache.on_add = None
        self.cache.on_route_off = None
        self._stop_thread()

    def _added(self, added: Added) -> None:
        """On the event loop, from the cache: queue the entry (no Redis call, no serialising here)."""
        self._entries.append((added, time.time() + (added[5] - self.cache.now())))

    # messages

    def _entry_message(self, added: Added, expires_at: float) -> bytes:
        entry_id, scope_key, project_id, vector, answer, _expiry = added
        message = {
            "type": "entry",
            "o": self.origin,
            "id": entry_id,
            "k": scope_key,
            "p": project_id,
            "m": self.cache.settings.model,
            "e": expires_at,
            "v": base64.b64encode(vector.astype("<f4").tobytes()).decode(),
            "a": orjson.loads(answer.dumps()),
        }
        return orjson.dumps(message)

    def _off_message(self, route: str, precision: float, verified: int) -> bytes:
        settings = self.cache.settings
        return orjson.dumps(
            {
                "type": "off",
                "o": self.origin,
                "r": route,
                "precision": precision,
                "verified": verified,
                "threshold": settings.threshold,
                "m": settings.model,
            }
        )

    def _parse(self, data: bytes) -> dict[str, Any] | None:
        """A message of ours, checked, with ``vector``/``answer`` decoded for an entry; None (and a log
        line) for anything else."""
        import numpy as np

        try:
            message = orjson.loads(data)
            kind = message["type"]
            if kind == "entry":
                vector = np.frombuffer(base64.b64decode(message["v"], validate=True), dtype="<f4")
                dimension = self.cache.dimension
                if (
                    not isinstance(message["k"], str)
                    or not isinstance(message["p"], str)
                    or not isinstance(message["id"], str)
                    or not vector.size
                    or (dimension is not None and vector.size != dimension)
                    or not np.isfinite(vector).all()
                    or not math.isfinite(float(message["e"]))
                ):
                    raise ValueError("not an entry")
                message["e"] = float(message["e"])
                message["vector"] = vector.astype(np.float32)
                message["answer"] = answer = CachedAnswer.loads(orjson.dumps(message["a"]))
                if not isinstance(answer.response, dict):
                    raise ValueError("not an answer")
            elif kind == "off":
                if not isinstance(message["r"], str):
                    raise ValueError("not a route")
                message["precision"] = float(message["precision"])
                message["verified"] = int(message["verified"])
                message["threshold"] = float(message["threshold"])
            else:
                raise ValueError(f"unknown type {kind!r}")
            return message if message["m"] == self.cache.settings.model else None  # another model's
        except Exception as exc:  # anything at all on the channel: logged, never a crash of the thread
            log.warning("shared semantic cache: a message that is not ours on %s (%s)", self.channel, exc)
            return None

    # the thread

    def _prepare(self) -> None:
        while self._offs:  # serialised here, off the event loop
            route, precision, verified = self._offs.popleft()
            self._outbox.append((route, None, self._off_message(route, precision, verified)))
        while self._entries:
            added, expires_at = self._entries.popleft()
            self._outbox.append((added[1], expires_at, self._entry_message(added, expires_at)))

    def _connected(self, client: Any) -> None:
        self._load(client)

    def _received(self, data: bytes) -> None:
        parsed = self._parse(data)
        if parsed is not None and parsed["o"] != self.origin:
            self._apply_soon([parsed])

    def _publish(self, client: Any, item: tuple[str, float | None, bytes]) -> None:
        """An entry (``key`` its scope key) or a switch-off (``key`` its route, no expiry)."""
        key, expires_at, data = item
        ttl_ms = max(1, int(self.cache.settings.ttl_s * 1000))
        pipe = client.pipeline(transaction=False)
        if expires_at is None:
            off_key = OFF_KEY.format(scope=self.scope)
            pipe.hset(off_key, key, data)
            pipe.pexpire(off_key, ttl_ms)
        else:
            if expires_at <= time.time():
                return  # expired while Redis was away
            entries = ENTRIES_KEY.format(scope=self.scope, key=key)
            scopes = SCOPES_KEY.format(scope=self.scope)
            pipe.rpush(entries, data)
            pipe.ltrim(entries, -self.cache.settings.max_entries, -1)
            pipe.pexpire(entries, ttl_ms)
            pipe.zadd(scopes, {key: expires_at})
            pipe.zremrangebyscore(scopes, "-inf", time.time())
            pipe.pexpire(scopes, ttl_ms)
        pipe.publish(self.channel, data)
        pipe.execute()

    def _load(self, client: Any) -> None:
        """The routes switched off and the entries still live that other processes published before
        this one listened (entries already here are skipped)."""
        loaded: list[dict[str, Any]] = []
        for data in client.hvals(OFF_KEY.format(scope=self.scope)):
            parsed = self._parse(data)
            if parsed is not None and parsed["threshold"] == self.cache.settings.threshold:
                loaded.append(parsed)
        keys = [
            raw.decode()
            for raw in client.zrangebyscore(SCOPES_KEY.format(scope=self.scope), time.time(), "+inf")
        ]
        for start in range(0, len(keys), _LOAD_BATCH):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + _LOAD_BATCH]:
                pipe.lrange(ENTRIES_KEY.format(scope=self.scope, key=key), 0, -1)
            for entries in pipe.execute():
                for data in entries:
                    parsed = self._parse(data)
                    if parsed is not None and parsed["type"] == "entry":
                        loaded.append(parsed)
            if loaded:
                self._apply_soon(loaded)  # a batch of scopes at a time: the event loop is not held long
                loaded = []
        if loaded:
            self._apply_soon(loaded)

    # on the event loop

    def _apply_soon(self, messages: list[dict[str, Any]]) -> None:
        self._call_soon(self._apply, messages)

    def _apply(self, messages: list[dict[str, Any]]) -> None:
        """Add other processes' entries to this process's index; switch off what they switched off."""
        import numpy as np

        now_wall, now = time.time(), self.cache.now()
        by_scope: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for message in messages:
            if message["type"] == "off":
                self.cache.switch_off(
                    message["r"],
                    f"another process measured precision {message['precision']:.2f} over "
                    f"{message['verified']} re-checked hits",
                )
            elif message["e"] > now_wall:
                by_scope.setdefault((message["k"], message["p"]), []).append(message)
        for (scope_key, project_id), entries in by_scope.items():
            dimension = self.cache.dimension
            entries = [m for m in entries if dimension is None or m["vector"].size == dimension]
            if not entries:
                continue
            self.applied += self.cache.insert(
                scope_key,
                project_id,
                [m["id"] for m in entries],
                np.stack([m["vector"] for m in entries]),
                [m["answer"] for m in entries],
                [now + (m["e"] - now_wall) for m in entries],
            )
