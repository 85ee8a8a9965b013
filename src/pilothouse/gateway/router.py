"""Routing: which deployment serves a request, retries with backoff and jitter (honouring
Retry-After), fallback chains, and failover for streams before their first chunk."""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pilothouse.domain.traces import MAX_MODEL_NAME_CHARS
from pilothouse.gateway.config import GatewayConfig
from pilothouse.gateway.health import CircuitState, DeploymentHealth
from pilothouse.providers.anthropic_native import NATIVE, without_native
from pilothouse.providers.base import Deployment, Provider, ProviderError, upstream_request_id
from pilothouse.providers.capabilities import DROP_PARAMS, unhonoured, unhonoured_native, without
from pilothouse.providers.registry import create_provider

T = TypeVar("T")

MAX_WILDCARD_MODELS = 256  # model names wildcard routes may serve in one process (each has deployments)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one deployment, as the trace records it."""

    deployment: str
    model: str
    status: int
    latency_ms: float
    error: str | None = None
    dropped: tuple[str, ...] = ()  # parameters the deployment could not honour, dropped as asked
    upstream_request_id: str | None = None  # the upstream's x-request-id / request-id, when it sent one

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "deployment": self.deployment,
            "model": self.model,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 3),
            "error": self.error,
        }
        if self.dropped:
            out["dropped_params"] = list(self.dropped)
        if self.upstream_request_id:
            out["upstream_request_id"] = self.upstream_request_id
        return out


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.settings = config.router
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self.aliases = dict(config.aliases)
        self.deployments: dict[str, list[Deployment]] = {}
        self._patterns = [d for d in config.deployments if "*" in d.name]  # wildcard routes
        self._expanded = 0
        self.providers: dict[Deployment, Provider] = {}
        self.health: dict[Deployment, DeploymentHealth] = {}
        # told when a breaker of this process opens or closes (SharedBreakers tells the other processes)
        self.on_breaker: Callable[[Deployment, CircuitState], None] | None = None
        for d in config.deployments:
            if "*" not in d.name:
                self._add(d)

    def _add(self, deployment: Deployment) -> None:
        self.deployments.setdefault(deployment.name, []).append(deployment)
        self.providers[deployment] = create_provider(deployment)
        self.health[deployment] = DeploymentHealth(
            self.settings.breaker_failures,
            self.settings.breaker_cooldown_s,
            self._clock,
            on_change=functools.partial(self._breaker_changed, deployment),
        )

    def _breaker_changed(self, deployment: Deployment, state: CircuitState) -> None:
        if self.on_breaker is not None:
            self.on_breaker(deployment, state)

    def model_names(self) -> list[str]:
        """The names clients can ask for: served models, wildcard routes and aliases."""
        return sorted({*self.deployments, *(p.name for p in self._patterns), *self.aliases})

    def resolve(self, name: str) -> str:
        """The served name for ``name``: an alias's target, else ``name``; a name a wildcard route
        serves gets its deployments on first use (at most :data:`MAX_WILDCARD_MODELS` names in all, so
        that clients cannot make connections and circuit breakers without end)."""
        name = self.aliases.get(name, name)
        if name in self.deployments or not self._patterns or len(name) > MAX_MODEL_NAME_CHARS:
            return name
        route = next((p.name for p in self._patterns if fnmatch.fnmatchcase(name, p.name)), None)
        if route is None or self._expanded >= MAX_WILDCARD_MODELS:
            return name
        prefix, _, suffix = route.partition("*")
        part = name[len(prefix) : len(name) - len(suffix)]
        for pattern in self._patterns:
            if pattern.name == route:
                upstream = pattern.model.replace("*", part)
                self._add(dataclasses.replace(pattern, name=name, model=upstream))
        self._expanded += 1
        return name

    def _pick(self, name: str, failed: set[Deployment]) -> Deployment | None:
        """The deployment of ``name`` for the next attempt: among those whose circuit lets traffic
        through (preferring ones that have not failed this request), by the routing strategy."""
        available = [d for d in self.deployments[name] if self.health[d].available()]
        pool = [d for d in available if d not in failed] or available
        if not pool:
            return None
        strategy = self.settings.strategy
        if strategy == "least-busy":
            least = min(self.health[d].in_flight for d in pool)
            pool = [d for d in pool if self.health[d].in_flight == least]
        elif strategy == "latency":
            unmeasured = [d for d in pool if self.health[d].latency_ewma_ms is None]
            if not unmeasured:
                return min(pool, key=lambda d: self.health[d].latency_ewma_ms or 0.0)
            pool = unmeasured
        if len(pool) == 1:
            return pool[0]
        return self._rng.choices(pool, weights=[d.weight for d in pool])[0]

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        base = min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** (attempt - 1))
        delay = base * (0.5 + self._rng.random() / 2)  # jitter
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.settings.max_backoff_s))
        return float(delay)

    async def run(
        self,
        request: dict[str, Any],
        operation: str,
        call: Callable[[Deployment, Provider, dict[str, Any]], Awaitable[T]],
        attempts: list[Attempt],
    ) -> tuple[T, Deployment]:
        """Call deployments of ``request``'s model (then of its fallbacks) until one succeeds, each
        with ``request`` as it takes it (:func:`adapt`); every try is appended to ``attempts``.
        Raises :class:`UnknownModel` or the last :class:`ProviderError`."""
        model = self.resolve(str(request["model"]))
        if model not in self.deployments:
            raise UnknownModel(model)
        last: ProviderError | None = None
        deadline = time.monotonic() + self.settings.timeout_s
        for name in [model, *self.config.fallbacks.get(model, [])]:
            failed: set[Deployment] = set()
            tries = 0
            while tries <= self.settings.retries:
                deployment = self._pick(name, failed)
                if deployment is None:
                    break  # every circuit of this model is open: on to the fallbacks
                health = self.health[deployment]
                health.start()
                started = time.perf_counter()
                dropped: tuple[str, ...] = ()
                upstream_request_id.set(None)
                try:
                    provider = self.providers[deployment]
                    sent, dropped = adapt(operation, deployment, provider, request)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise ProviderError(
                            504, f"No answer within the {self.settings.timeout_s:g} s request timeout."
                        )
                    try:
                        # asyncio.timeout, not wait_for: no extra task per request
                        async with asyncio.timeout(remaining):
                            result = await call(deployment, provider, sent)
                    except TimeoutError:
                        raise ProviderError(
                            504,
                            f"No answer within the {self.settings.timeout_s:g} s request timeout.",
                            code="timeout",
                        ) from None
                except ProviderError as exc:
                    health.failed(exc.message, counts=exc.retryable)
                    attempts.append(
                        Attempt(
                            deployment.id,
                            deployment.model,
                            exc.status,
                            _ms(started),
                            exc.message,
                            upstream_request_id=upstream_request_id.get(),
                        )
                    )
                    last = exc
                    if not exc.retryable:
                        if exc.fallback:
                            break  # e.g. context window: only another model can help
                        raise
                    failed.add(deployment)
                    tries += 1
                    if tries <= self.settings.retries:
                        await self._sleep(self._backoff(tries, exc.retry_after_s))
                    continue
                except BaseException:
                    health.failed("cancelled", counts=False)
                    raise
                health.succeeded(_ms(started))
                attempts.append(
                    Attempt(
                        deployment.id,
                        deployment.model,
                        200,
                        _ms(started),
                        dropped=dropped,
                        upstream_request_id=upstream_request_id.get(),
                    )
                )
                return result, deployment
        if last is None:
            raise ProviderError(
                503,
                f"No deployment of '{model}' is available: their circuit breakers are open.",
                code="deployments_unavailable",
                retry_after_s=self.settings.breaker_cooldown_s,
            )
        raise last

    async def chat(
        self, request: dict[str, Any], attempts: list[Attempt]
    ) -> tuple[dict[str, Any], Deployment]:
        """A non-streamed completion."""

        async def call(_d: Deployment, provider: Provider, sent: dict[str, Any]) -> dict[str, Any]:
            return await provider.chat(sent)

        return await self.run(request, "chat", call, attempts)

    async def chat_stream(
        self, request: dict[str, Any], attempts: list[Attempt]
    ) -> tuple[AsyncIterator[dict[str, Any]], Deployment]:
        """A streamed completion. Attempts fail over until the first chunk has arrived; after that, a
        failure ends the stream (the client already has part of an answer)."""

        async def call(
            _d: Deployment, provider: Provider, sent: dict[str, Any]
        ) -> AsyncIterator[dict[str, Any]]:
            stream = provider.chat_stream(sent)
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                raise ProviderError(502, "upstream stream was empty", retryable=True) from None
            except BaseException:
                await stream.aclose()  # type: ignore[attr-defined]
                raise
            return _prepend(first, stream)

        return await self.run(request, "chat", call, attempts)

    async def embed(
        self, request: dict[str, Any], attempts: list[Attempt]
    ) -> tuple[dict[str, Any], Deployment]:
        """Embeddings."""

        async def call(_d: Deployment, provider: Provider, sent: dict[str, Any]) -> dict[str, Any]:
            return await provider.embed(sent)

        return await self.run(request, "embeddings", call, attempts)

    def health_report(self) -> list[dict[str, Any]]:
        """Every deployment with its circuit state and load figures."""
        return [
            {
                "model": d.name,
                "deployment": d.id,
                "provider": d.provider,
                "upstream_model": d.model,
                **h.as_dict(),
            }
            for d, h in list(self.health.items())  # a copy: wildcard routes may add deployments meanwhile
        ]

    async def close(self) -> None:
        """Close every provider's connections."""
        for provider in self.providers.values():
            await provider.close()


def adapt(
    operation: str, deployment: Deployment, provider: Provider, request: dict[str, Any]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``request`` as ``deployment`` takes it, and the parameters dropped from it: a native Anthropic
    body only for a provider that speaks it; a parameter the provider cannot honour refused (a 400
    naming it) unless the request or the deployment allows dropping it."""
    native = request.get(NATIVE) if getattr(provider, "native", None) != "anthropic" else None
    if native is not None:
        request = without_native(request)
    names = unhonoured(operation, deployment.provider, request)
    shown = names
    if native is not None and isinstance(native.get("body"), dict):  # /v1/messages, translated
        shown = unhonoured_native(native["body"], deployment.provider, names)
    if shown and request.get(DROP_PARAMS) is not True and deployment.options.get(DROP_PARAMS) is not True:
        raise ProviderError(
            400,
            f"The parameter '{shown[0]}' cannot be honoured by model '{deployment.name}' "
            f'({deployment.provider} deployment); remove it, or send "{DROP_PARAMS}": true to drop it.',
            kind="invalid_request_error",
            code="unsupported_parameter",
        )
    if names or DROP_PARAMS in request:
        request = without(request, names)
    return request, tuple(shown)


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
