"""Circuit breakers shared by every process of a server, and every server, of one database and Redis.

Each process counts its own consecutive failures of a deployment, as before; the first process whose
breaker opens tells the others through Redis pub/sub, and they open theirs for the rest of the
cool-down. A probe that succeeds after the cool-down closes the breaker everywhere the same way. So a
dead upstream costs about ``breaker_failures`` failed calls in all, not that many per process (at
most N x (``breaker_failures`` - 1) + 1 when N processes fail calls at the same moment).

Nothing on the request path waits for Redis: the router reads its own copy of each breaker, a change
is queued for this module's thread to publish, and what other processes publish is applied on the
event loop (``call_soon_threadsafe``). A process that starts while a breaker is open reads it from a
Redis hash of open breakers (each with the time it opened). When Redis is unreachable the breakers
work as before, per process, until it is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from pilothouse.gateway.health import CircuitState
from pilothouse.gateway.redis_channel import RedisChannel
from pilothouse.gateway.router import Router
from pilothouse.providers.base import Deployment

log = logging.getLogger("pilothouse.gateway.breakers")
# Named by the store (Settings.store_id): the servers of one database share their breakers; other
# servers on the same Redis keep theirs.
CHANNEL = "pilothouse:breakers:{scope}"  # messages {"d": deployment id, "s": state, "t": at, "o": origin}
OPEN_KEY = "pilothouse:breakers:{scope}:open"  # hash: deployment id -> the time (epoch seconds) it opened


class SharedBreakers(RedisChannel):
    """Publishes this process's breaker changes and applies other processes' (``start``/``stop``)."""

    def __init__(self, router: Router, redis_url: str, scope: str = "", *, poll_s: float = 0.05) -> None:
        super().__init__(
            redis_url, CHANNEL.format(scope=scope), label="shared circuit breakers", log=log, poll_s=poll_s
        )
        self.router = router
        self.open_key = OPEN_KEY.format(scope=scope)
        self.applied = 0  # changes of other processes applied here

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Listen and publish from now on; ``loop`` is the one the router runs on."""
        self.router.on_breaker = self._changed
        self._start_thread(loop)

    def stop(self) -> None:
        """Stop the thread (what it has not published yet is dropped: the breakers stay per process)."""
        self.router.on_breaker = None
        self._stop_thread()

    def _changed(self, deployment: Deployment, state: CircuitState) -> None:
        """On the event loop, from the router: queue the change (no Redis call here)."""
        self._outbox.append((deployment.id, state.value, time.time()))

    def _connected(self, client: Any) -> None:
        self._load_open(client)

    def _publish(self, client: Any, item: tuple[str, str, float]) -> None:
        deployment_id, state, at = item
        message = json.dumps({"d": deployment_id, "s": state, "t": at, "o": self.origin})
        pipe = client.pipeline(transaction=False)
        if state == CircuitState.OPEN.value:
            pipe.hset(self.open_key, deployment_id, str(at))
        else:
            pipe.hdel(self.open_key, deployment_id)
        pipe.publish(self.channel, message)
        pipe.execute()

    def _load_open(self, client: Any) -> None:
        """The breakers other processes opened before this one listened (still cooling down)."""
        cooldown = self.router.settings.breaker_cooldown_s
        now = time.time()
        for raw_id, raw_at in client.hgetall(self.open_key).items():
            at = float(raw_at)
            if now - at < cooldown:
                self._apply_soon(raw_id.decode(), CircuitState.OPEN.value, at)

    def _received(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            deployment_id, state, at, origin = message["d"], message["s"], float(message["t"]), message["o"]
        except (ValueError, KeyError, TypeError):
            log.warning("shared circuit breakers: a message that is not ours on %s", self.channel)
            return
        if origin != self.origin:
            self._apply_soon(str(deployment_id), str(state), at)

    def _apply_soon(self, deployment_id: str, state: str, at: float) -> None:
        self._call_soon(self._apply, deployment_id, state, at)

    def _apply(self, deployment_id: str, state: str, at: float) -> None:
        """On the event loop: set this process's breakers of that upstream."""
        for deployment, health in list(self.router.health.items()):
            if deployment.id != deployment_id:
                continue
            if state == CircuitState.OPEN.value:
                health.opened_elsewhere(time.time() - at)
            elif state == CircuitState.CLOSED.value:
                health.closed_elsewhere()
            self.applied += 1
