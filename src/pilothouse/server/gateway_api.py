"""The OpenAI-compatible surface (``POST /v1/chat/completions``, ``POST /v1/embeddings``,
``GET /v1/models``) and the Anthropic one (``POST /v1/messages``), over any provider. Every call that
reaches a project is recorded as a generation through the ingest queue (never waiting for the
database); errors use the JSON shape of the surface's own API."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pilothouse.domain.keys import Scope
from pilothouse.domain.traces import SpanRecord, Status, Usage
from pilothouse.gateway.recording import (
    GatewayCall,
    StreamAssembler,
    output_text,
    parse_traceparent,
    usage_from_openai,
)
from pilothouse.gateway.router import UnknownModel
from pilothouse.gateway.validation import (
    InvalidRequest,
    check_chat_request,
    check_embeddings_request,
    check_messages_request,
)
from pilothouse.providers.anthropic_format import (
    MessagesStreamEncoder,
    messages_to_openai_request,
    openai_to_messages_response,
)
from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.server.auth import Principal
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse
from pilothouse.server.state import AppState

log = logging.getLogger("pilothouse.gateway")
USER_HEADER = "x-pilothouse-user"


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.pilothouse
    return state


def _save(state: AppState, record: SpanRecord) -> None:
    state.metrics.observe_call(record)
    if not state.ingest.offer([record]):
        log.warning("ingest queue full: the trace of a gateway call was not recorded")


def _headers(call: GatewayCall) -> dict[str, str]:
    # Cost is "unknown" until a price is known for the model (never reported as 0).
    return {"x-pilothouse-trace-id": call.trace_id, "x-pilothouse-cost-usd": "unknown"}


async def _start(request: Request, operation: str) -> tuple[AppState, Principal, GatewayCall, Any]:
    state = _state(request)
    principal = await state.auth.authenticate(request, Scope.GATEWAY)
    trace_id, parent_id = parse_traceparent(request.headers.get("traceparent"))
    call = GatewayCall(
        project_id=principal.project_id,
        operation=operation,
        request={},
        key_id=principal.key.id if principal.key else None,
        user_id=request.headers.get(USER_HEADER),
        trace_id=trace_id,
        parent_id=parent_id,
    )
    try:
        body = await read_json(request, state.settings.max_body_bytes)
    except ApiError as exc:
        _save(state, call.record(status=Status.ERROR, error=exc.message, http_status=exc.status))
        raise
    if isinstance(body, dict):
        call.request = body
        if isinstance(body.get("user"), str) and call.user_id is None:
            call.user_id = body["user"]
    return state, principal, call, body


async def _admit(state: AppState, principal: Principal, model: str) -> dict[str, str]:
    """Check the key's model allow-list and rate limits (counting this request); the rate-limit
    headers to send. Raises a 403 or 429 :class:`ApiError`."""
    key = principal.key
    if key is None:  # the admin secret has no limits
        return {}
    if not key.may_use(model):
        raise ApiError(
            403, f"This key may not call the model '{model}'.", code="model_not_allowed", param="model"
        )
    if key.rpm is None and key.tpm is None:
        return {}
    decision = await state.limiter.admit(key.id, key.rpm, key.tpm)
    headers = {}
    if key.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(key.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, key.rpm - decision.requests))
    if key.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(key.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, key.tpm - decision.tokens))
    if not decision.allowed:
        limit = key.rpm if decision.exceeded == "requests" else key.tpm
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
        raise ApiError(
            429,
            f"Rate limit reached for this key: {limit} {decision.exceeded} per minute. "
            f"Retry after {headers['Retry-After']} s.",
            code="rate_limit_exceeded",
            headers=headers,
        )
    return headers


async def _succeeded(
    state: AppState,
    principal: Principal,
    call: GatewayCall,
    deployment: Deployment,
    response: dict[str, Any],
    output: str | None,
) -> None:
    """Record a completed non-streamed call and count its tokens against the key's limits."""
    usage = usage_from_openai(response.get("usage"))
    _save(
        state,
        call.record(
            status=Status.OK,
            served_model=response.get("model"),
            provider=deployment.provider,
            deployment=deployment.id,
            output=output,
            usage=usage,
        ),
    )
    await _count_tokens(state, principal, usage)


async def _count_tokens(state: AppState, principal: Principal, usage: Usage) -> None:
    if principal.key is not None and principal.key.tpm is not None and usage.total:
        await state.limiter.add_tokens(principal.key.id, usage.total)


def _fail(state: AppState, call: GatewayCall, exc: Exception) -> ApiError:
    """The client-facing error for ``exc``, recorded on the trace."""
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, InvalidRequest):
        error = ApiError(exc.status, exc.message, code="invalid_request", param=exc.param)
    elif isinstance(exc, UnknownModel):
        error = ApiError(
            404,
            f"The model '{exc.args[0]}' does not exist or is not served here (GET /v1/models lists them).",
            code="model_not_found",
            param="model",
        )
    elif isinstance(exc, ProviderError):
        headers = {"Retry-After": f"{exc.retry_after_s:g}"} if exc.retry_after_s is not None else None
        error = ApiError(exc.status, exc.message, code=exc.code, headers=headers)
        error.kind = exc.kind
    else:
        raise exc
    error.headers.update(_headers(call))
    _save(state, call.record(status=Status.ERROR, error=error.message, http_status=error.status))
    return error


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions`` (stream and non-stream)."""
    state, principal, call, body = await _start(request, "chat")
    try:
        check_chat_request(body)
        limit_headers = await _admit(state, principal, body["model"])
        if not body.get("stream"):
            response, deployment = await state.router.chat(body, call.attempts)
            await _succeeded(state, principal, call, deployment, response, output_text(response))
            return FastJSONResponse(response, headers={**_headers(call), **limit_headers})
        # Always ask the upstream for usage; pass the usage chunk on only if the client asked for it.
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        upstream_request = {
            **body,
            "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
        }
        stream, deployment = await state.router.chat_stream(upstream_request, call.attempts)
    except (ApiError, InvalidRequest, UnknownModel, ProviderError) as exc:
        raise _fail(state, call, exc) from None

    return _relay(state, principal, call, stream, deployment, OpenAIWire(client_wants_usage), limit_headers)


class OpenAIWire:
    """Chunks as OpenAI server-sent events."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        if not chunk.get("choices") and chunk.get("usage") and not self.include_usage:
            return b""
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, exc: ProviderError, message: str) -> bytes:
        payload = {"error": {"message": message, "type": exc.kind, "param": None, "code": exc.code}}
        return b"data: " + orjson.dumps(payload) + b"\n\n"


class AnthropicWire:
    """Chunks as Anthropic Messages stream events."""

    def __init__(self, model: str) -> None:
        self.encoder = MessagesStreamEncoder(model)

    @staticmethod
    def _events(events: list[tuple[str, dict[str, Any]]]) -> bytes:
        return b"".join(
            f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n" for name, data in events
        )

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return self._events(self.encoder.feed(chunk))

    def end(self) -> bytes:
        return self._events(self.encoder.finish())

    def error(self, exc: ProviderError, message: str) -> bytes:
        return self._events(
            [
                (
                    "error",
                    {
                        "type": "error",
                        "error": {"type": _ANTHROPIC_TYPES.get(exc.status, "api_error"), "message": message},
                    },
                )
            ]
        )


def _relay(
    state: AppState,
    principal: Principal,
    call: GatewayCall,
    stream: AsyncIterator[dict[str, Any]],
    deployment: Deployment,
    wire: OpenAIWire | AnthropicWire,
    headers: dict[str, str],
) -> StreamingResponse:
    """Stream the upstream's chunks to the client in its wire format, and record the call when the
    stream ends: completed, failed after the first chunk (an error event ends it), or cut by the
    client (the upstream call is cancelled)."""

    async def events() -> AsyncIterator[bytes]:
        assembler = StreamAssembler()
        status, error = Status.OK, None
        try:
            async for chunk in stream:
                assembler.add(chunk)
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    call.first_token()
                data = wire.chunk(chunk)
                if data:
                    yield data
            yield wire.end()
        except ProviderError as exc:
            # The client already has part of the answer: end the stream with an error event.
            status, error = Status.ERROR, f"stream failed after the first chunk: {exc.message}"
            yield wire.error(exc, error)
        except BaseException:
            status, error = Status.ERROR, "client disconnected; upstream call cancelled"
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            final = assembler.response()
            usage = usage_from_openai(final.get("usage"))
            await _count_tokens(state, principal, usage)
            _save(
                state,
                call.record(
                    status=status,
                    served_model=final.get("model"),
                    provider=deployment.provider,
                    deployment=deployment.id,
                    output=output_text(final),
                    usage=usage,
                    error=error,
                ),
            )

    return StreamingResponse(events(), media_type="text/event-stream", headers={**_headers(call), **headers})


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _anthropic_error(error: ApiError) -> Response:
    body = {
        "type": "error",
        "error": {"type": _ANTHROPIC_TYPES.get(error.status, "api_error"), "message": error.message},
    }
    return FastJSONResponse(body, status_code=error.status, headers=error.headers)


async def messages(request: Request) -> Response:
    """``POST /v1/messages``: the Anthropic Messages API over any provider (errors in Anthropic's shape)."""
    try:
        return await _messages(request)
    except ApiError as exc:
        return _anthropic_error(exc)


async def _messages(request: Request) -> Response:
    state, principal, call, body = await _start(request, "chat")
    try:
        check_messages_request(body)
        limit_headers = await _admit(state, principal, body["model"])
        openai_request = messages_to_openai_request(body)
        call.request = openai_request  # recorded in one shape, whichever surface was used
        if isinstance(openai_request.get("user"), str) and call.user_id is None:
            call.user_id = openai_request["user"]
        if not body.get("stream"):
            response, deployment = await state.router.chat(openai_request, call.attempts)
            await _succeeded(state, principal, call, deployment, response, output_text(response))
            message = openai_to_messages_response(response, body["model"])
            return FastJSONResponse(message, headers={**_headers(call), **limit_headers})
        upstream_request = {**openai_request, "stream_options": {"include_usage": True}}
        stream, deployment = await state.router.chat_stream(upstream_request, call.attempts)
    except (ApiError, InvalidRequest, UnknownModel, ProviderError) as exc:
        raise _fail(state, call, exc) from None
    return _relay(state, principal, call, stream, deployment, AnthropicWire(body["model"]), limit_headers)


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``."""
    state, principal, call, body = await _start(request, "embeddings")
    try:
        check_embeddings_request(body)
        limit_headers = await _admit(state, principal, body["model"])
        response, deployment = await state.router.embed(body, call.attempts)
    except (ApiError, InvalidRequest, UnknownModel, ProviderError) as exc:
        raise _fail(state, call, exc) from None
    await _succeeded(
        state, principal, call, deployment, response, f"{len(response.get('data') or [])} embeddings"
    )
    return FastJSONResponse(response, headers={**_headers(call), **limit_headers})


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the model names this gateway serves."""
    state = _state(request)
    await state.auth.authenticate(request, Scope.GATEWAY)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "pilothouse"}
        for name in state.router.model_names()
    ]
    return FastJSONResponse({"object": "list", "data": data})


async def deployments(request: Request) -> Response:
    """``GET /api/deployments``: every deployment with its circuit state and load."""
    state = _state(request)
    await state.auth.authenticate(request, Scope.READ)
    return FastJSONResponse({"data": state.router.health_report()})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text exposition."""
    return Response(_state(request).metrics.render(), media_type="text/plain; version=0.0.4")


routes = [
    Route("/api/deployments", deployments, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/messages", messages, methods=["POST"]),
]
