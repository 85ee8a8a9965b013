"""Health of each deployment: a circuit breaker (closed -> open after consecutive failures -> one
half-open probe after a cool-down -> closed again on success) and the figures the balancing
strategies read (requests in flight, a moving average of latency)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class CircuitState(StrEnum):
    """Whether a deployment gets traffic."""

    CLOSED = "closed"  # healthy: gets traffic
    OPEN = "open"  # failing: skipped until the cool-down ends
    HALF_OPEN = "half_open"  # cool-down over: one probe request decides


@dataclass
class DeploymentHealth:
    """Breaker and load figures of one deployment."""

    failure_threshold: int = 5
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    state: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    latency_ewma_ms: float | None = None
    last_error: str | None = None
    # told when this process's own calls open or close the breaker (shared with other processes
    # through Redis: pilothouse.gateway.shared_breakers); not told of what other processes decided
    on_change: Callable[[CircuitState], None] | None = field(default=None, repr=False)
    _alpha: float = field(default=0.2, repr=False)

    def current_state(self) -> CircuitState:
        """The state now (an open breaker becomes half-open when its cool-down is over)."""
        if self.state is CircuitState.OPEN and self.clock() - self.opened_at >= self.cooldown_s:
            self.state = CircuitState.HALF_OPEN
            self.probing = False
        return self.state

    def available(self) -> bool:
        """May a request go here now? In half-open state only one probe at a time."""
        state = self.current_state()
        if state is CircuitState.CLOSED:
            return True
        return state is CircuitState.HALF_OPEN and not self.probing

    def start(self) -> None:
        """A request is sent here."""
        self.in_flight += 1
        self.requests += 1
        if self.current_state() is CircuitState.HALF_OPEN:
            self.probing = True

    def succeeded(self, latency_ms: float) -> None:
        """The request succeeded: close the breaker."""
        self.in_flight -= 1
        self.consecutive_failures = 0
        was = self.state
        self.state = CircuitState.CLOSED
        self.probing = False
        if was is not CircuitState.CLOSED and self.on_change is not None:
            self.on_change(CircuitState.CLOSED)
        self.latency_ewma_ms = (
            latency_ms
            if self.latency_ewma_ms is None
            else self._alpha * latency_ms + (1 - self._alpha) * self.latency_ewma_ms
        )

    def failed(self, error: str, counts: bool = True) -> None:
        """The request failed; ``counts`` is False for failures that say nothing of the deployment's
        health (a bad request)."""
        self.in_flight -= 1
        if not counts:
            return
        self.failures += 1
        self.last_error = error
        self.consecutive_failures += 1
        if (
            self.current_state() is CircuitState.HALF_OPEN
            or self.consecutive_failures >= self.failure_threshold
        ):
            self.state = CircuitState.OPEN
            self.opened_at = self.clock()
            self.probing = False
            if self.on_change is not None:
                self.on_change(CircuitState.OPEN)

    def opened_elsewhere(self, age_s: float) -> None:
        """Another process opened this breaker ``age_s`` seconds ago: open here too, for the rest of
        its cool-down (then one probe, as if it had opened here)."""
        self.state = CircuitState.OPEN
        self.opened_at = self.clock() - max(0.0, age_s)
        self.probing = False

    def closed_elsewhere(self) -> None:
        """Another process's probe succeeded: close here too."""
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self.probing = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view for the API."""
        return {
            "state": self.current_state().value,
            "consecutive_failures": self.consecutive_failures,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "latency_ewma_ms": None if self.latency_ewma_ms is None else round(self.latency_ewma_ms, 3),
            "last_error": self.last_error,
        }
