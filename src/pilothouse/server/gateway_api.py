"""The gateway's HTTP surfaces: OpenAI's (``POST /v1/chat/completions``, ``POST /v1/embeddings``,
``GET /v1/models``) and Anthropic's (``POST /v1/messages``). They only translate: authenticate, read
and check the body in the surface's own format, hand an OpenAI-shaped request to
:class:`pilothouse.gateway.Gateway`, and render its reply (or error) in the surface's format. Every call
that reaches a project is recorded by the gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pilothouse.domain.keys import Scope
from pilothouse.gateway import Caller, CallSpan, Gateway, GatewayError, GatewayReply
from pilothouse.gateway.cache import cache_policy
from pilothouse.gateway.client_names import MESSAGES_FORMAT, renamed
from pilothouse.gateway.validation import (
    InvalidRequest,
    check_chat_request,
    check_embeddings_request,
    check_messages_request,
)
from pilothouse.providers.anthropic import OVERLOADED
from pilothouse.providers.anthropic_format import messages_to_openai_request, openai_to_messages_response
from pilothouse.providers.anthropic_native import NATIVE, native_request
from pilothouse.server.attribution import USER_HEADER, attribution, without_tags
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse, error_response, retry_headers
from pilothouse.server.state import Services
from pilothouse.server.wire import ANTHROPIC_TYPES, AnthropicWire, OpenAIWire

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
    caller = Caller(principal.project_id, principal.key, user_id=headers.get(USER_HEADER))
    if gateway.caches.enabled:  # the request's cache directives matter only when a cache is on
        caller.cache_policy = cache_policy(headers)
    call = gateway.start(operation, caller, traceparent=headers.get("traceparent"))
    try:
        body = await read_json(request, services.settings.max_body_bytes, services.body_budget)
    except ApiError as exc:
        raise await gateway.fail(call, exc) from None
    if _nesting_exceeds(body, MAX_NESTING):
        error = ApiError(400, f"Request body is nested more than {MAX_NESTING} levels deep.", code="too_deep")
        raise await gateway.fail(call, error) from None
    said = attribution(headers, body)
    caller.tags = call.tags = said.tags
    call.session_id, call.metadata = said.session_id, said.metadata
    if isinstance(body, dict):
        body = without_tags(body)
        call.request = body
        if isinstance(body.get("user"), str) and call.user_id is None:
            call.user_id = body["user"]
    return gateway, caller, call, body


MAX_NESTING = 128  # JSON Schemas of tools nest a few dozen levels; recording walks the request recursively


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether lists and objects in ``value`` nest deeper than ``limit`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


SPOOL_ERROR = GatewayError(
    503,
    "The server could not write to its durable spool; the call was not acknowledged. Retry later.",
    code="spool_unavailable",
)


def spool_error_response(path: str) -> Response:
    """503 in the surface's shape: the durable mode could not put a request's records on disk."""
    return surface_error_response(path, SPOOL_ERROR)


def surface_error_response(path: str, error: GatewayError) -> Response:
    """``error`` in the shape of the surface ``path`` belongs to: Anthropic's on ``/v1/messages`` (and
    its ``count_tokens``), OpenAI's elsewhere (errors raised outside a route's own handling: the
    database or Redis unreachable, a 500)."""
    if path.rstrip("/") in ("/v1/messages", "/v1/messages/count_tokens"):
        return _anthropic_error(error)
    return error_response(error)


async def _recording(reply: GatewayReply, services: Services) -> BackgroundTask | None:
    """Record the call after its answer is sent (a background task); in the durable mode before
    it, so that the call is on the spool (flushed by the app) when the client reads its 200."""
    if reply.after is None:
        return None
    if services.spool is None:
        return BackgroundTask(reply.after)
    await reply.after()
    return None


async def _answer(reply: GatewayReply, wire: Wire, services: Services) -> Response:
    if reply.chunks is None:
        assert reply.response is not None
        background = await _recording(reply, services)
        return FastJSONResponse(reply.response, headers=reply.headers, background=background)
    if services.spool is not None:
        # a stream's interrupted record (its worst-case cost) is on disk before its first byte
        # (a failed flush: the spool refuses from now on, and the stream's end says so: _events)
        with contextlib.suppress(OSError):
            await services.spool.flush()
    return StreamingResponse(
        _events(reply.chunks, wire, services),
        media_type="text/event-stream",
        headers={**reply.headers, "cache-control": "no-cache"},
    )


async def _events(
    chunks: AsyncIterator[dict[str, Any]], wire: Wire, services: Services
) -> AsyncIterator[bytes]:
    """The gateway's chunks as the surface's server-sent events; a failure after the first chunk ends
    the stream with an error event (the client already has part of the answer). In the durable
    mode the call's record is on disk before the last event (the end of the stream) is sent."""
    try:
        async for chunk in chunks:
            if data := wire.chunk(chunk):
                yield data
        end = wire.end()
    except GatewayError as exc:
        end = wire.error(exc)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]  # a client that left cancels the upstream
    if services.spool is not None:
        try:
            await services.spool.flush()
        except OSError:
            end = wire.error(SPOOL_ERROR)
    yield end


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions`` (stream and non-stream)."""
    gateway, caller, call, body = await _start(request, "chat")
    if isinstance(body, dict) and "prompt" in body:  # a reference to the prompt registry
        body = await gateway.apply_prompt(call, body)
    try:
        check_chat_request(body)
    except InvalidRequest as exc:
        raise await gateway.fail(call, exc) from None
    reply = await gateway.chat(call, body, caller)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return await _answer(reply, OpenAIWire(include_usage), _services(request))


def _anthropic_error(error: GatewayError) -> Response:
    error = renamed(error, MESSAGES_FORMAT)  # the client sent output_config.format, not response_format
    body = {
        "type": "error",
        "error": {"type": ANTHROPIC_TYPES.get(error.status, "api_error"), "message": error.message},
    }
    status = 529 if error.code == OVERLOADED else error.status  # Anthropic's own "overloaded" status
    return FastJSONResponse(body, status_code=status, headers=retry_headers(error))


async def messages(request: Request) -> Response:
    """``POST /v1/messages``: the Anthropic Messages API over any provider (errors in Anthropic's shape)."""
    try:
        return await _messages(request)
    except GatewayError as exc:  # the gateway's, or a surface's (ApiError)
        return _anthropic_error(exc)


def _translated(body: dict[str, Any], request: Request) -> dict[str, Any]:
    """The OpenAI request of a Messages body (how the gateway sees, checks and records it), the
    client's own body riding along for an Anthropic deployment (sent as is: nothing lost)."""
    try:
        openai_request = messages_to_openai_request(body)
    except (TypeError, AttributeError, ValueError):  # a shape the checks did not foresee
        # our own words: Python's exception text names no field a client knows
        raise InvalidRequest(
            400, "The request could not be read as a Messages request: a field has an unexpected shape."
        ) from None
    if "drop_params" in body:  # the gateway's own: an Anthropic upstream would refuse it
        body = {k: v for k, v in body.items() if k != "drop_params"}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and set(metadata) - {"user_id"}:  # Anthropic takes only user_id there
        body = {**body, "metadata": {k: v for k, v in metadata.items() if k == "user_id"}}
    openai_request[NATIVE] = native_request(body, request.headers)
    return openai_request


async def _messages(request: Request) -> Response:
    gateway, caller, call, body = await _start(request, "chat")
    try:
        check_messages_request(body)
        openai_request = _translated(body, request)
    except InvalidRequest as exc:
        raise await gateway.fail(call, exc) from None
    if isinstance(openai_request.get("user"), str) and call.user_id is None:
        call.user_id = openai_request["user"]
    reply = await gateway.chat(call, openai_request, caller)
    if reply.chunks is None:
        assert reply.response is not None
        native = reply.response.get(NATIVE)
        message = native if native is not None else openai_to_messages_response(reply.response, body["model"])
        background = await _recording(reply, _services(request))
        return FastJSONResponse(message, headers=reply.headers, background=background)
    return await _answer(reply, AnthropicWire(body["model"]), _services(request))


async def count_tokens(request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: an Anthropic deployment's own count of a Messages request,
    else the gateway's estimate (errors in Anthropic's shape)."""
    try:
        services = _services(request)
        principal = await services.auth.authenticate(request, Scope.GATEWAY)
        body = await read_json(request, services.settings.max_body_bytes, services.body_budget)
        check_messages_request({"max_tokens": 1, **body} if isinstance(body, dict) else body)
        openai_request = _translated(body, request)
        caller = Caller(principal.project_id, principal.key)
        return FastJSONResponse(await services.gateway.count_tokens(caller, openai_request))
    except InvalidRequest as exc:
        return _anthropic_error(GatewayError(exc.status, exc.message, param=exc.param))
    except GatewayError as exc:
        return _anthropic_error(exc)


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``."""
    gateway, caller, call, body = await _start(request, "embeddings")
    try:
        check_embeddings_request(body)
    except InvalidRequest as exc:
        raise await gateway.fail(call, exc) from None
    reply = await gateway.embed(call, body, caller)
    return await _answer(reply, OpenAIWire(False), _services(request))


async def deployments(request: Request) -> Response:
    """``GET /api/deployments``: every deployment with its circuit state and load."""
    services = _services(request)
    await services.auth.authenticate(request, Scope.READ)
    return FastJSONResponse({"data": services.gateway.router.health_report()})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text exposition."""
    # Rendered in a thread: however many series there are, the event loop keeps serving meanwhile.
    services = _services(request)
    # with workers, every process's series summed (server/metrics_shared.py): one Redis read
    render = services.shared_metrics.render if services.shared_metrics else services.metrics.render
    text = await asyncio.to_thread(render)
    return Response(text, media_type="text/plain; version=0.0.4")


routes = [
    Route("/api/deployments", deployments, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
