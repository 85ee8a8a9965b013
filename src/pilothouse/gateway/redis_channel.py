"""A thread that keeps a process in step with the other processes of its server (and the other servers
of its store) through one Redis channel: what it publishes is queued by the event loop (no Redis call on
the request path), what the others publish reaches :meth:`RedisChannel._received`. The shared circuit
breakers and the shared semantic cache are its two uses.

While Redis is unreachable it tries again every second, with one warning when Redis goes away and one
when it is back; each new connection first calls :meth:`RedisChannel._connected` (to load what was
published before this process listened)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections import deque
from typing import Any


class RedisChannel:
    """The thread, its outbox and its connection; subclasses say what to publish and what to do with
    what arrives. ``label`` names it in the log."""

    def __init__(
        self, redis_url: str, channel: str, *, label: str, log: logging.Logger, poll_s: float = 0.05
    ) -> None:
        self.redis_url = redis_url
        self.channel = channel
        self.label = label
        self.log = log
        self.poll_s = poll_s  # how often the thread looks for something to publish, at most
        self.origin = f"{os.getpid()}-{secrets.token_hex(4)}"  # what this process's messages carry
        self._outbox: deque[Any] = deque(maxlen=4096)  # what to publish, oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        name = "pilothouse-" + label.replace(" ", "-")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _start_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    # what subclasses say

    def _prepare(self) -> None:
        """In the thread, before each round: move what the event loop queued into the outbox."""

    def _connected(self, client: Any) -> None:
        """In the thread, on each new connection, before anything is published or received."""

    def _publish(self, client: Any, item: Any) -> None:
        """In the thread: publish one item of the outbox."""
        raise NotImplementedError

    def _received(self, data: bytes) -> None:
        """In the thread: one message on the channel (this process's own come back too)."""
        raise NotImplementedError

    def _call_soon(self, callback: Any, *args: Any) -> None:
        """Run ``callback(*args)`` on the event loop (from the thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        import redis

        client: Any = None
        pubsub: Any = None
        failing = False  # said once when Redis goes away, once when it is back
        while not self._stop.is_set():
            try:
                self._prepare()
                if pubsub is None:
                    client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
                    pubsub = client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.channel)
                    self._connected(client)
                    if failing:
                        self.log.warning("%s: Redis is back", self.label)
                        failing = False
                while self._outbox:
                    self._publish(client, self._outbox[0])
                    self._outbox.popleft()
                message = pubsub.get_message(timeout=self.poll_s)
                if message is not None and message.get("type") == "message":
                    self._received(message["data"])
            except (redis.RedisError, OSError) as exc:
                if not failing:
                    self.log.warning(
                        "%s: Redis is unavailable (%s); per process until it is back", self.label, exc
                    )
                    failing = True
                _close(pubsub, client)
                client = pubsub = None
                self._stop.wait(1.0)
        _close(pubsub, client)


def _close(*connections: Any) -> None:
    for connection in connections:
        if connection is not None:
            with contextlib.suppress(Exception):  # a broken connection, or at shutdown
                connection.close()
