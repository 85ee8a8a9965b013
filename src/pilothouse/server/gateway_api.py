"""The gateway's HTTP surfaces: OpenAI's (``POST /v1/chat/completions``, ``POST /v1/embeddings``,
``GET /v1/models``) and Anthropic's (``POST /v1/messages``). They only translate: authenticate, read
and check the body in the surface's own format, hand an OpenAI-shaped request to
:class:`pilothouse.gateway.Gateway`, and render its reply (or error) in the surface's format. Every call
that reaches a project is recorded by the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pilothouse.domain.keys import Scope
from pilothouse.gateway import Caller, CallSpan, Gateway, GatewayError, GatewayReply
from pilothouse.gateway.cache import cache_policy
from pilothouse.gateway.validation import (
    InvalidRequest,
    check_chat_request,
    check_embeddings_request,
    check_messages_request,
)
from pilothouse.providers.anthropic_format import messages_to_openai_request, openai_to_messages_response
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse
from pilothouse.server.state import Services
from pilothouse.server.wire import ANTHROPIC_TYPES, AnthropicWire, OpenAIWire

USER_HEADER = "x-pilothouse-user"
TAGS_HEADER = "x-pilothouse-tags"  # comma-separated; budgets and reports by tag use them

Wire = OpenAIWire | AnthropicWire


def _services(request: Request) -> Services:
    services: Services = request.app.state.pilothouse
    return services


async def _start(request: Request, operation: str) -> tuple[Gateway, Caller, CallSpan, Any]:
    """Authenticate, begin the call and read its body (a body that cannot be read is a recorded
    refusal)."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.GATEWAY)
    headers = request.headers
    gateway = services.gateway
    caller = Caller(
        principal.project_id,
        principal.key,
        user_id=headers.get(USER_HEADER),
        tags=tuple(t.strip() for t in headers.get(TAGS_HEADER, "").split(",") if t.strip()),
    )
    if gateway.caches.enabled:  # the request's cache directives matter only when a cache is on
        caller.cache_policy = cache_policy(headers)
    call = gateway.start(operation, caller, traceparent=headers.get("traceparent"))
    try:
        body = await read_json(request, services.settings.max_body_bytes)
    except ApiError as exc:
        raise await gateway.fail(call, exc) from None
    if isinstance(body, dict):
        call.request = body
        if isinstance(body.get("user"), str) and call.user_id is None:
            call.user_id = body["user"]
    return gateway, caller, call, body


def _answer(reply: GatewayReply, wire: Wire) -> Response:
    if reply.chunks is None:
        assert reply.response is not None
        background = BackgroundTask(reply.after) if reply.after is not None else None
        return FastJSONResponse(reply.response, headers=reply.headers, background=background)
    return StreamingResponse(
        _events(reply.chunks, wire), media_type="text/event-stream", headers=reply.headers
    )


async def _events(chunks: AsyncIterator[dict[str, Any]], wire: Wire) -> AsyncIterator[bytes]:
    """The gateway's chunks as the surface's server-sent events; a failure after the first chunk ends
    the stream with an error event (the client already has part of the answer)."""
    try:
        async for chunk in chunks:
            if data := wire.chunk(chunk):
                yield data
        yield wire.end()
    except GatewayError as exc:
        yield wire.error(exc)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]  # a client that left cancels the upstream


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions`` (stream and non-stream)."""
    gateway, caller, call, body = await _start(request, "chat")
    try:
        check_chat_request(body)
    except InvalidRequest as exc:
        raise await gateway.fail(call, exc) from None
    reply = await gateway.chat(call, body, caller)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return _answer(reply, OpenAIWire(include_usage))


def _anthropic_error(error: GatewayError) -> Response:
    body = {
        "type": "error",
        "error": {"type": ANTHROPIC_TYPES.get(error.status, "api_error"), "message": error.message},
    }
    return FastJSONResponse(body, status_code=error.status, headers=error.headers)


async def messages(request: Request) -> Response:
    """``POST /v1/messages``: the Anthropic Messages API over any provider (errors in Anthropic's shape)."""
    try:
        return await _messages(request)
    except GatewayError as exc:  # the gateway's, or a surface's (ApiError)
        return _anthropic_error(exc)


async def _messages(request: Request) -> Response:
    gateway, caller, call, body = await _start(request, "chat")
    try:
        check_messages_request(body)
    except InvalidRequest as exc:
        raise await gateway.fail(call, exc) from None
    openai_request = messages_to_openai_request(body)  # recorded in one shape, whichever surface was used
    if isinstance(openai_request.get("user"), str) and call.user_id is None:
        call.user_id = openai_request["user"]
    reply = await gateway.chat(call, openai_request, caller)
    if reply.chunks is None:
        assert reply.response is not None
        message = openai_to_messages_response(reply.response, body["model"])
        background = BackgroundTask(reply.after) if reply.after is not None else None
        return FastJSONResponse(message, headers=reply.headers, background=background)
    return _answer(reply, AnthropicWire(body["model"]))


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``."""
    gateway, caller, call, body = await _start(request, "embeddings")
    try:
        check_embeddings_request(body)
    except InvalidRequest as exc:
        raise await gateway.fail(call, exc) from None
    reply = await gateway.embed(call, body, caller)
    return _answer(reply, OpenAIWire(False))


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the model names this gateway serves."""
    services = _services(request)
    await services.auth.authenticate(request, Scope.GATEWAY)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "pilothouse"}
        for name in services.gateway.model_names()
    ]
    return FastJSONResponse({"object": "list", "data": data})


async def deployments(request: Request) -> Response:
    """``GET /api/deployments``: every deployment with its circuit state and load."""
    services = _services(request)
    await services.auth.authenticate(request, Scope.READ)
    return FastJSONResponse({"data": services.gateway.router.health_report()})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text exposition."""
    # Rendered in a thread: however many series there are, the event loop keeps serving meanwhile.
    text = await asyncio.to_thread(_services(request).metrics.render)
    return Response(text, media_type="text/plain; version=0.0.4")


routes = [
    Route("/api/deployments", deployments, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/messages", messages, methods=["POST"]),
]
