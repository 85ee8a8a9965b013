"""Routing: which deployment serves a request, retries with backoff and jitter (honouring
Retry-After), fallback chains, and failover for streams before their first chunk."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pilothouse.gateway.config import GatewayConfig
from pilothouse.providers.base import Deployment, Provider, ProviderError
from pilothouse.providers.registry import create_provider

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one deployment, as the trace records it."""

    deployment: str
    model: str
    status: int
    latency_ms: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "deployment": self.deployment,
            "model": self.model,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 3),
            "error": self.error,
        }


class RoutingError(ProviderError):
    """Every attempt failed; carries the last upstream error's status and message."""


class UnknownModel(LookupError):
    """No deployment serves the requested model name."""


class Router:
    """Chooses deployments and drives attempts; providers are created once per deployment."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.settings = config.router
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.deployments: dict[str, list[Deployment]] = {}
        for d in config.deployments:
            self.deployments.setdefault(d.name, []).append(d)
        self.providers: dict[Deployment, Provider] = {d: create_provider(d) for d in config.deployments}

    def model_names(self) -> list[str]:
        """The names clients can ask for."""
        return sorted(self.deployments)

    def _order(self, name: str) -> list[Deployment]:
        """The model's deployments, weighted-random first, the rest after."""
        pool = list(self.deployments[name])
        ordered = []
        while pool:
            pick = self._rng.choices(pool, weights=[d.weight for d in pool])[0]
            ordered.append(pick)
            pool.remove(pick)
        return ordered

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        base = min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** (attempt - 1))
        delay = base * (0.5 + self._rng.random() / 2)  # jitter
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.settings.max_backoff_s))
        return float(delay)

    async def run(
        self, model: str, call: Callable[[Deployment, Provider], Awaitable[T]], attempts: list[Attempt]
    ) -> tuple[T, Deployment]:
        """Call deployments of ``model`` (then of its fallbacks) until one succeeds; every try is
        appended to ``attempts``. Raises :class:`UnknownModel` or the last :class:`ProviderError`."""
        if model not in self.deployments:
            raise UnknownModel(model)
        last: ProviderError | None = None
        for name in [model, *self.config.fallbacks.get(model, [])]:
            candidates = self._order(name)
            for tries in range(self.settings.retries + 1):
                deployment = candidates[tries % len(candidates)]
                started = time.perf_counter()
                try:
                    result = await call(deployment, self.providers[deployment])
                except ProviderError as exc:
                    attempts.append(
                        Attempt(deployment.id, deployment.model, exc.status, _ms(started), exc.message)
                    )
                    last = exc
                    if not exc.retryable:
                        if exc.fallback:
                            break  # e.g. context window: only another model can help
                        raise
                    if tries < self.settings.retries:
                        await self._sleep(self._backoff(tries + 1, exc.retry_after_s))
                    continue
                attempts.append(Attempt(deployment.id, deployment.model, 200, _ms(started)))
                return result, deployment
        assert last is not None
        raise last

    async def chat(
        self, request: dict[str, Any], attempts: list[Attempt]
    ) -> tuple[dict[str, Any], Deployment]:
        """A non-streamed completion."""

        async def call(_d: Deployment, provider: Provider) -> dict[str, Any]:
            return await provider.chat(request)

        return await self.run(str(request["model"]), call, attempts)

    async def chat_stream(
        self, request: dict[str, Any], attempts: list[Attempt]
    ) -> tuple[AsyncIterator[dict[str, Any]], Deployment]:
        """A streamed completion. Attempts fail over until the first chunk has arrived; after that, a
        failure ends the stream (the client already has part of an answer)."""

        async def call(_d: Deployment, provider: Provider) -> AsyncIterator[dict[str, Any]]:
            stream = provider.chat_stream(request)
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                raise ProviderError(502, "upstream stream was empty", retryable=True) from None
            except BaseException:
                await stream.aclose()  # type: ignore[attr-defined]
                raise
            return _prepend(first, stream)

        return await self.run(str(request["model"]), call, attempts)

    async def embed(
        self, request: dict[str, Any], attempts: list[Attempt]
    ) -> tuple[dict[str, Any], Deployment]:
        """Embeddings."""

        async def call(_d: Deployment, provider: Provider) -> dict[str, Any]:
            return await provider.embed(request)

        return await self.run(str(request["model"]), call, attempts)

    async def close(self) -> None:
        """Close every provider's connections."""
        for provider in self.providers.values():
            await provider.close()


async def _prepend(
    first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
