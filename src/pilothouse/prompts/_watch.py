"""How a label move made by one server process reaches the others: pushed, not waited out.

With Redis configured, the process that made a change publishes ``project\\nname`` on a channel that
every process listens to (a message arrives in milliseconds). Redis pub/sub delivers at most once, so
the database is also polled, slowly, as a backstop. Without Redis, each process polls the newest
events of the audit list every ``poll_seconds`` (0.5 s by default): one indexed range read of a few
rows. Either way, what is heard clears the registry's cache entries of that prompt."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

from pilothouse.prompts._registry import PromptRegistry

__all__ = ["CHANNEL", "ChangeWatcher", "publish_change"]

log = logging.getLogger("pilothouse.prompts")

CHANNEL = "pilothouse:prompts:changed"
_LOOKBACK = 64  # events re-read each poll: PostgreSQL may commit a lower seq after a higher one
_BACKSTOP_SECONDS = 5.0  # the poll's interval while Redis pushes changes


class ChangeWatcher:
    """A daemon thread that clears ``registry``'s cache when another process changes a prompt."""

    def __init__(
        self, registry: PromptRegistry, *, poll_seconds: float = 0.5, redis_url: str | None = None
    ) -> None:
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.redis_url = redis_url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: deque[int] = deque(maxlen=4 * _LOOKBACK)
        self._seen_set: set[int] = set()
        self._last = 0
        self._redis: Any = None
        self._pubsub: Any = None
        self.heard = 0  # changes of other processes heard (for tests and /metrics)

    def start(self) -> None:
        """Start listening (idempotent); changes made before now are already in the database."""
        if self._thread is not None:
            return
        self._last = self.registry.prompts.last_seq()
        if self.redis_url:
            self._connect_redis()
            self.registry.on_change(self._publish)
        self._thread = threading.Thread(target=self._run, name="pilothouse-prompt-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the Redis connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for closing in (self._pubsub, self._redis):
            if closing is not None:
                with contextlib.suppress(Exception):  # closing a broken connection: nothing left to do
                    closing.close()

    def _connect_redis(self) -> None:
        import redis

        try:
            self._redis = redis.Redis.from_url(
                self.redis_url or "", socket_timeout=2, socket_connect_timeout=2
            )
            self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(CHANNEL)
        except redis.RedisError as exc:
            log.warning("prompt changes: Redis unavailable (%s); polling the database instead", exc)
            self._pubsub = None

    def _publish(self, project_id: str, name: str) -> None:
        if self._redis is None:
            return
        try:
            self._redis.publish(CHANNEL, f"{project_id}\n{name}")
        except Exception as exc:  # the poll still carries the change
            log.warning("prompt changes: could not publish on Redis (%s)", exc)

    def _run(self) -> None:
        next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                self._poll()
                backstop = max(_BACKSTOP_SECONDS, self.poll_seconds)
                next_poll = now + (backstop if self._pubsub is not None else self.poll_seconds)
            if self._pubsub is None:
                self._stop.wait(max(0.0, next_poll - time.monotonic()))
                continue
            try:
                message = self._pubsub.get_message(timeout=min(0.5, max(0.0, next_poll - time.monotonic())))
            except Exception as exc:
                log.warning("prompt changes: Redis connection lost (%s); polling the database", exc)
                self._pubsub = None
                continue
            if message and message.get("type") == "message":
                project_id, _, name = bytes(message["data"]).decode("utf-8", "replace").partition("\n")
                self.heard += 1
                self.registry.changed(project_id, name, local=False)

    def _poll(self) -> None:
        try:
            events = self.registry.prompts.changed_since(max(0, self._last - _LOOKBACK))
        except Exception as exc:  # the database is away: keep serving what is cached
            log.warning("prompt changes: cannot read the database (%s)", exc)
            return
        for seq, project_id, name in events:
            if seq in self._seen_set:
                continue
            self._remember(seq)
            if seq > self._last or self._last - seq < _LOOKBACK:
                self.heard += 1
                self.registry.changed(project_id, name, local=False)
            self._last = max(self._last, seq)

    def _remember(self, seq: int) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(seq)
        self._seen_set.add(seq)


def publish_change(redis_url: str | None, project_id: str, name: str) -> None:
    """Tell every server process listening on Redis that ``name`` changed (a change made outside a
    server: the CLI). Without Redis, or when it is away, the servers' database poll carries it."""
    if not redis_url:
        return
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.publish(CHANNEL, f"{project_id}\n{name}")
        finally:
            client.close()
    except redis.RedisError as exc:
        log.warning("prompt changes: could not publish on Redis (%s); servers will see it by polling", exc)
