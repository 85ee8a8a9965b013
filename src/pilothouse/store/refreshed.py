"""A blocking read (a query, a file's size) kept in memory for a while, so that a frequent caller such
as ``/health`` answers from memory and leaves the event loop only when the value is stale: a thread hop
per probe costs little on a quiet server, but under load each hop waits its turn for the GIL behind
the ingest writer (benchmarks/abuse.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Refreshed(Generic[T]):
    """``read()`` at most every ``ttl_s`` seconds; :attr:`stale` says whether :meth:`get` would block."""

    def __init__(
        self, read: Callable[[], T], ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read, self.ttl_s, self._clock = read, ttl_s, clock
        self._value: tuple[float, T] | None = None

    @property
    def stale(self) -> bool:
        return self._value is None or self._clock() - self._value[0] > self.ttl_s

    def get(self) -> T:
        """The kept value, or a new read (blocking: call it in a thread when :attr:`stale`)."""
        if self._value is None or self.stale:
            self._value = (self._clock(), self._read())
        return self._value[1]
