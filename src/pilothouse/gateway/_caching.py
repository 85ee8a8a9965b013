"""The caches on the gateway's call path: the exact cache first, then the semantic cache; storing an
upstream answer in both; re-checking a sample of semantic hits against a fresh answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pilothouse.costs.pricing import Pricer
from pilothouse.domain.traces import Cost, SpanRecord, Status
from pilothouse.gateway.cache import CachedAnswer, CachePolicy, ResponseCache, cache_key, replay_chunks
from pilothouse.gateway.recording import CallSpan, output_text, usage_from_openai
from pilothouse.gateway.router import Router
from pilothouse.gateway.semantic_cache import SemanticCache, SemanticLookup
from pilothouse.providers.anthropic_native import NATIVE, message_events
from pilothouse.providers.base import Deployment, ProviderError

log = logging.getLogger("pilothouse.cache")


@dataclass(slots=True)
class CacheOutcome:
    """What the caches said about one request."""

    answer: CachedAnswer | None = None  # an answer to serve
    store_key: str | None = None  # exact-cache key to store the upstream's answer under
    semantic: SemanticLookup | None = None  # the semantic lookup (to store the answer with, or the hit)
    may_store: bool = True

    @property
    def semantic_hit(self) -> bool:
        """The answer came from the semantic cache."""
        return self.answer is not None and self.semantic is not None and self.semantic.answer is not None


async def replay(response: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """A complete answer (cached, or a cascade's) as the chunks of a stream; an Anthropic deployment's
    own answer as its own stream events (thinking blocks and all)."""
    native = response.get(NATIVE)
    if isinstance(native, dict):
        for event in message_events(native):
            yield {
                "object": "chat.completion.chunk",
                "model": response.get("model"),
                "choices": [],
                NATIVE: event,
            }
        return
    for chunk in replay_chunks(response):
        yield chunk


@dataclass(slots=True)
class Caches:
    """The exact response cache and the semantic cache (either may be off)."""

    exact: ResponseCache | None = None
    semantic: SemanticCache | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def enabled(self) -> bool:
        """Either cache is on."""
        return self.exact is not None or self.semantic is not None

    async def lookup(self, policy: CachePolicy, call: CallSpan, request: dict[str, Any]) -> CacheOutcome:
        """Look the request up in the exact cache, then in the semantic cache; ``call.cache`` says
        ``hit``, ``semantic-hit``, ``miss`` or ``skip``."""
        if (self.exact is None and self.semantic is None) or request.get("n", 1) != 1:
            return CacheOutcome()
        outcome = CacheOutcome(may_store=policy.write)
        if not policy.read:
            call.cache = "skip"
        if self.exact is not None:
            key = cache_key(call.project_id, request)
            outcome.store_key = key if policy.write else None
            if policy.read and (answer := await self.exact.get(key)) is not None:
                call.cache, outcome.answer = "hit", answer
                return outcome
        if self.semantic is not None and policy.read:
            found = await self.semantic.lookup(call.project_id, request)
            outcome.semantic = found
            if found is not None and found.answer is not None:
                call.cache, outcome.answer = "semantic-hit", found.answer
                return outcome
        if policy.read:
            call.cache = "miss"
        return outcome

    async def store(
        self, outcome: CacheOutcome, deployment: Deployment, response: dict[str, Any], cost: Cost | None
    ) -> None:
        """Remember an upstream answer in the caches the request looked in."""
        if not outcome.may_store or outcome.answer is not None:
            return
        answer = CachedAnswer(response, deployment.provider, deployment.id, cost.total if cost else None)
        if outcome.store_key is not None and self.exact is not None:
            await self.exact.set(outcome.store_key, answer)
        if outcome.semantic is not None and self.semantic is not None:
            self.semantic.add(outcome.semantic, answer)

    def maybe_verify(
        self,
        router: Router,
        pricer: Pricer,
        outcome: CacheOutcome,
        call: CallSpan,
        request: dict[str, Any],
        save: Callable[[SpanRecord], None],
    ) -> None:
        """For a sample of semantic hits, ask the model again in the background and compare the
        answers (the fresh call is traced like any other, named ``cache-verify``)."""
        semantic = self.semantic
        if semantic is None or not outcome.semantic_hit or not semantic.should_verify():
            return
        assert outcome.semantic is not None and outcome.answer is not None
        lookup, cached = outcome.semantic, outcome.answer
        fresh_request = {k: v for k, v in request.items() if k not in ("stream", "stream_options")}
        check = CallSpan(
            project_id=call.project_id,
            operation="cache-verify",
            request=fresh_request,
            key_id=call.key_id,
            user_id=call.user_id,
            trace_id=call.trace_id,
            parent_id=call.span_id,
        )

        async def verify() -> None:
            try:
                response, deployment = await router.chat(fresh_request, check.attempts)
            except ProviderError as exc:
                save(check.record(status=Status.ERROR, error=exc.message, http_status=exc.status))
                return
            usage = usage_from_openai(response.get("usage"))
            cost = pricer.call_cost(deployment.provider, deployment.model, response.get("model"), usage)
            fresh_text = output_text(response) or ""
            agreed = await semantic.record_verification(
                lookup.route, output_text(cached.response) or "", fresh_text, lookup.project_id
            )
            check.cache = "verified-agree" if agreed else "verified-disagree"
            save(check.record_answer(response, deployment.provider, deployment.id, usage=usage, cost=cost))

        task = asyncio.get_running_loop().create_task(verify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait (a while) for background checks, then close the exact cache's connections."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        if self.exact is not None:
            await self.exact.close()
