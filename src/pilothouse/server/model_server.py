"""``pilothouse serve-model``: one model behind its own small OpenAI-compatible server (no keys, no
tracing), a replica that gateways route to like any OpenAI-compatible upstream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pilothouse.gateway.validation import InvalidRequest, check_chat_request, check_embeddings_request
from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.providers.registry import create_provider
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse


def create_model_app(deployment: Deployment, max_body_bytes: int = 16 * 1024 * 1024) -> Starlette:
    """The app serving ``deployment`` as model ``deployment.name``."""
    provider = create_provider(deployment)

    async def checked(request: Request, check: Any) -> dict[str, Any]:
        body = await read_json(request, max_body_bytes)
        try:
            checked_body: dict[str, Any] = check(body)
        except InvalidRequest as exc:
            raise ApiError(exc.status, exc.message, param=exc.param) from None
        if checked_body["model"] != deployment.name:
            raise ApiError(404, f"This server serves '{deployment.name}' only.", code="model_not_found")
        return checked_body

    async def chat(request: Request) -> Response:
        body = await checked(request, check_chat_request)
        try:
            if not body.get("stream"):
                return FastJSONResponse({**await provider.chat(body), "model": deployment.name})
            stream = provider.chat_stream(body)
            first = await anext(stream)
        except ProviderError as exc:
            raise ApiError(exc.status, exc.message, code=exc.code) from None
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            try:
                chunk: dict[str, Any] | None = first
                while chunk is not None:
                    if include_usage or chunk.get("choices") or not chunk.get("usage"):
                        yield b"data: " + orjson.dumps({**chunk, "model": deployment.name}) + b"\n\n"
                    chunk = await anext(stream, None)
                yield b"data: [DONE]\n\n"
            except ProviderError as exc:
                yield (
                    b"data: " + orjson.dumps({"error": {"message": exc.message, "type": exc.kind}}) + b"\n\n"
                )
            finally:
                await stream.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        body = await checked(request, check_embeddings_request)
        try:
            return FastJSONResponse({**await provider.embed(body), "model": deployment.name})
        except ProviderError as exc:
            raise ApiError(exc.status, exc.message, code=exc.code) from None

    async def models(_request: Request) -> Response:
        return FastJSONResponse(
            {
                "object": "list",
                "data": [{"id": deployment.name, "object": "model", "created": 0, "owned_by": "pilothouse"}],
            }
        )

    async def health(_request: Request) -> Response:
        return FastJSONResponse({"status": "ok", "model": deployment.name})

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return ApiError(exc.status_code, str(exc.detail)).response()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await provider.close()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error},
    )
