"""The ``sim`` provider: the deterministic simulated model, in-process (no HTTP), for tests, load
tests and fault drills. Options (config ``options:``) are :class:`SimConfig` fields, plus
``error_rate`` (share of calls that fail with 500) and ``rate_limit_rate`` (share that get 429)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Any

from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.providers.simulated_model import (
    SimConfig,
    SimReply,
    count_tokens,
    is_content_chunk,
    openai_chunk_payloads,
    openai_completion,
    simulate,
)


class SimProvider:
    """Answers like a model would, from :func:`pilothouse.providers.simulated_model.simulate`."""

    def __init__(self, deployment: Deployment) -> None:
        known = {f.name for f in fields(SimConfig)}
        options = dict(deployment.options)
        self.error_rate = float(options.pop("error_rate", 0.0))
        self.rate_limit_rate = float(options.pop("rate_limit_rate", 0.0))
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown sim option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        self.config = SimConfig(**options)
        self.model = deployment.model
        self._random = random.Random(0)
        self._in_flight = 0

    def _maybe_fail(self) -> None:
        roll = self._random.random()
        if roll < self.rate_limit_rate:
            raise ProviderError.from_status(
                429, "simulated rate limit", retry_after_s=self.config.retry_after_s
            )
        if roll < self.rate_limit_rate + self.error_rate:
            raise ProviderError.from_status(500, "simulated server error")

    async def _wait_first_token(self) -> None:
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)

    async def _reply(self, request: dict[str, Any]) -> SimReply:
        """Fail as configured, wait the latency, then the simulated answer."""
        self._maybe_fail()
        limit = self.config.max_concurrency
        if limit is not None and self._in_flight >= limit:
            raise ProviderError.from_status(
                429, "simulated rate limit (too many requests in flight)", self.config.retry_after_s
            )
        self._in_flight += 1
        try:
            await self._wait_first_token()
        finally:
            self._in_flight -= 1
        return simulate(
            request.get("messages") or [],
            request.get("max_completion_tokens") or request.get("max_tokens"),
            self.config,
            tools=request.get("tools"),
            tool_choice=request.get("tool_choice"),
            response_format=request.get("response_format"),
        )

    def _reply_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return {**request, "model": self.model}

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        reply = await self._reply(request)
        if self.config.tokens_per_s > 0:
            await asyncio.sleep(len(reply.words) / self.config.tokens_per_s)
        return openai_completion(self._reply_request(request), reply)

    async def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        reply = await self._reply(request)
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }
        emitted = 0
        drop_after = self.config.drop_after_tokens
        for payload in openai_chunk_payloads(request, reply):
            if is_content_chunk(payload):
                if drop_after is not None and emitted >= drop_after:
                    raise ProviderError(502, "simulated stream drop", retryable=True)
                if self.config.tokens_per_s > 0:
                    await asyncio.sleep(1 / self.config.tokens_per_s)
                emitted += 1
            yield {**base, **payload}

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        inputs = request.get("input")
        items = [inputs] if isinstance(inputs, str) else list(inputs or [])
        tokens = sum(count_tokens(str(t)) for t in items)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [((hash(str(t)) >> k) & 255) / 255 for k in range(8)],
            }
            for i, t in enumerate(items)
        ]
        return {
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def close(self) -> None:
        return None
