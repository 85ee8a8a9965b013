"""The ``anthropic`` provider: Anthropic's native Messages API over pooled HTTP, translated to and
from the gateway's OpenAI format (streams and tool use included).

Options: ``connect_timeout_s`` (default 5), ``first_token_timeout_s`` (default 60),
``anthropic_version`` (default 2023-06-01), ``headers`` (extra request headers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from pilothouse.providers.anthropic_format import (
    ChunkDecoder,
    messages_to_openai_response,
    openai_to_messages_request,
)
from pilothouse.providers.anthropic_native import NATIVE, tag_chunks, upstream_body
from pilothouse.providers.base import (
    Deployment,
    ProviderError,
    note_upstream_request_id,
    request_headers,
    upstream_json,
)
from pilothouse.providers.http import HTTPClient, HTTPError, HTTPTimeout, Response, StreamResponse

DEFAULT_BASE_URL = "https://api.anthropic.com"


def _error(response: Response | StreamResponse, body: bytes) -> ProviderError:
    try:
        data = orjson.loads(body)
        message = str((data.get("error") or {}).get("message") or data)
    except (orjson.JSONDecodeError, AttributeError):
        message = body.decode(errors="replace")[:500] or "upstream error"
    retry_after = response.headers.get("retry-after")
    try:
        retry = float(retry_after) if retry_after else None
    except ValueError:
        retry = None
    if response.status == 529:  # Anthropic is overloaded: a retryable 503 (OVERLOADED tells the surfaces)
        return ProviderError(503, message, code=OVERLOADED, retryable=True, retry_after_s=retry)
    return ProviderError.from_status(response.status, message, retry)


OVERLOADED = "overloaded"  # the code of Anthropic's 529 (the Anthropic surface answers 529 again)


class AnthropicProvider:
    """Talks Anthropic's Messages API with one pooled :class:`HTTPClient` per deployment; a request
    that carries a native Messages body (:mod:`pilothouse.providers.anthropic_native`) is sent as is."""

    native = "anthropic"  # the router leaves a native Anthropic body in the requests it hands over

    def __init__(self, deployment: Deployment) -> None:
        options = deployment.options
        self.model = deployment.model
        headers = {
            "content-type": "application/json",
            "anthropic-version": str(options.get("anthropic_version", "2023-06-01")),
            **dict(options.get("headers") or {}),
        }
        if deployment.api_key:
            headers["x-api-key"] = deployment.api_key
        self.client = HTTPClient(
            (deployment.base_url or DEFAULT_BASE_URL).rstrip("/"),
            headers=headers,
            connect_timeout=float(options.get("connect_timeout_s", 5.0)),
            read_timeout=float(options.get("first_token_timeout_s", 60.0)),
            max_connections=256,
            max_idle=64,
        )

    def _body(self, request: dict[str, Any], stream: bool) -> tuple[bytes, dict[str, str] | None]:
        native = request.get(NATIVE)
        if native is not None:
            return orjson.dumps(upstream_body(native, self.model, stream)), request_headers(
                native.get("headers")
            )
        return orjson.dumps(
            {**openai_to_messages_request(request, self.model), "stream": stream}
        ), request_headers()

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        body, headers = self._body(request, False)
        try:
            response = await self.client.request("POST", "/v1/messages", body, headers)
        except HTTPTimeout as exc:
            raise ProviderError(504, f"upstream timed out ({type(exc).__name__})", retryable=True) from exc
        except HTTPError as exc:
            raise ProviderError(502, f"upstream unreachable: {exc}", retryable=True) from exc
        note_upstream_request_id(response.headers)
        if response.status >= 400:
            raise _error(response, response.content)
        message = upstream_json(response.content)
        answer = messages_to_openai_response(message)
        if NATIVE in request:
            answer[NATIVE] = message
        return answer

    async def count_tokens(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """Anthropic's ``/v1/messages/count_tokens`` for a Messages body (its model replaced)."""
        payload = orjson.dumps({**body, "model": self.model})
        try:
            response = await self.client.request(
                "POST", "/v1/messages/count_tokens", payload, headers or None
            )
        except HTTPTimeout as exc:
            raise ProviderError(504, f"upstream timed out ({type(exc).__name__})", retryable=True) from exc
        except HTTPError as exc:
            raise ProviderError(502, f"upstream unreachable: {exc}", retryable=True) from exc
        if response.status >= 400:
            raise _error(response, response.content)
        return upstream_json(response.content)

    async def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        body, headers = self._body(request, True)
        native = NATIVE in request
        decoder = ChunkDecoder()
        try:
            async with self.client.stream("POST", "/v1/messages", body, headers) as response:
                note_upstream_request_id(response.headers)
                if response.status >= 400:
                    raise _error(response, await response.aread())
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = upstream_json(line[5:].strip())
                    if event.get("type") == "error":
                        message = (event.get("error") or {}).get("message", "stream error")
                        raise ProviderError(502, str(message), retryable=True)
                    chunks = decoder.feed(event)
                    if native:
                        chunks = tag_chunks(chunks, event, decoder.empty_chunk())
                    for chunk in chunks:
                        yield chunk
                    if event.get("type") == "message_stop":
                        return
        except HTTPTimeout as exc:
            raise ProviderError(504, f"upstream timed out ({type(exc).__name__})", retryable=True) from exc
        except HTTPError as exc:
            raise ProviderError(502, f"upstream stream failed: {exc}", retryable=True) from exc
        raise ProviderError(502, "upstream stream ended before message_stop", retryable=True)

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError(400, "Anthropic models do not serve embeddings.", kind="invalid_request_error")

    async def close(self) -> None:
        await self.client.aclose()
