"""The ``openai`` provider: OpenAI and any OpenAI-compatible server (vLLM, llama.cpp server, Ollama,
TGI, Together, Groq) over pooled HTTP connections.

Options: ``connect_timeout_s`` (default 5), ``first_token_timeout_s`` (time to the response headers
and to each chunk, default 60), ``headers`` (extra request headers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from pilothouse.providers.base import (
    Deployment,
    ProviderError,
    note_upstream_request_id,
    request_headers,
    upstream_json,
)
from pilothouse.providers.http import HTTPClient, HTTPError, HTTPTimeout, Response, StreamResponse

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _retry_after(response: Response | StreamResponse) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:500] or "upstream error"
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message") or data["error"])
    return str(data)[:500]


class OpenAIProvider:
    """Talks the OpenAI REST API with one pooled :class:`HTTPClient` per deployment."""

    def __init__(self, deployment: Deployment) -> None:
        options = deployment.options
        self.model = deployment.model
        self.base_url = (deployment.base_url or DEFAULT_BASE_URL).rstrip("/")
        headers = {"Content-Type": "application/json", **dict(options.get("headers") or {})}
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        self.client = HTTPClient(
            self.base_url,
            headers=headers,
            connect_timeout=float(options.get("connect_timeout_s", 5.0)),
            read_timeout=float(options.get("first_token_timeout_s", 60.0)),
            max_connections=256,
            max_idle=64,
        )

    def _body(self, request: dict[str, Any]) -> bytes:
        return orjson.dumps({**request, "model": self.model})

    async def _post(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.client.request("POST", path, self._body(request), request_headers())
        except HTTPTimeout as exc:
            raise ProviderError(504, f"upstream timed out ({type(exc).__name__})", retryable=True) from exc
        except HTTPError as exc:
            raise ProviderError(502, f"upstream unreachable: {exc}", retryable=True) from exc
        note_upstream_request_id(response.headers)
        if response.status >= 400:
            raise ProviderError.from_status(
                response.status, _error_message(response.content), _retry_after(response)
            )
        return upstream_json(response.content)

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._post("/chat/completions", {**request, "stream": False})

    async def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        body = self._body({**request, "stream": True})
        try:
            async with self.client.stream("POST", "/chat/completions", body, request_headers()) as response:
                note_upstream_request_id(response.headers)
                if response.status >= 400:
                    raise ProviderError.from_status(
                        response.status, _error_message(await response.aread()), _retry_after(response)
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = upstream_json(data)
                    if isinstance(chunk, dict) and "error" in chunk:
                        raise ProviderError(502, _error_message(data.encode()), retryable=True)
                    yield chunk
        except HTTPTimeout as exc:
            raise ProviderError(504, f"upstream timed out ({type(exc).__name__})", retryable=True) from exc
        except HTTPError as exc:
            raise ProviderError(502, f"upstream stream failed: {exc}", retryable=True) from exc
        # A stream that ends without [DONE] was cut off.
        raise ProviderError(502, "upstream stream ended before [DONE]", retryable=True)

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._post("/embeddings", request)

    async def close(self) -> None:
        await self.client.aclose()
