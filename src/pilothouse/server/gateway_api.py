"""The OpenAI-compatible surface (``POST /v1/chat/completions``, ``POST /v1/embeddings``,
``GET /v1/models``) and the Anthropic one (``POST /v1/messages``), over any provider. Every call that
reaches a project is recorded as a generation through the ingest queue (never waiting for the
database); errors use the JSON shape of the surface's own API."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pilothouse.domain.keys import Scope
from pilothouse.domain.traces import Cost, SpanRecord, Status, Usage
from pilothouse.gateway.cache import CachedAnswer, replay_chunks
from pilothouse.gateway.cascade import run_cascade
from pilothouse.gateway.recording import (
    GatewayCall,
    StreamAssembler,
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
    messages_to_openai_request,
    openai_to_messages_response,
)
from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.server import caching
from pilothouse.server.admission import admit, reserve_budget, settle_budget
from pilothouse.server.auth import Principal
from pilothouse.server.body import read_json
from pilothouse.server.errors import ApiError, FastJSONResponse
from pilothouse.server.state import AppState, Cascade
from pilothouse.server.wire import ANTHROPIC_TYPES, AnthropicWire, OpenAIWire

log = logging.getLogger("pilothouse.gateway")
USER_HEADER = "x-pilothouse-user"
TAGS_HEADER = "x-pilothouse-tags"  # comma-separated; budgets and reports by tag use them


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.pilothouse
    return state


def _save(state: AppState, record: SpanRecord) -> None:
    state.metrics.observe_call(record)
    if not state.ingest.offer([record]):
        log.warning("ingest queue full: the trace of a gateway call was not recorded")


def _headers(call: GatewayCall, cost: Cost | str | None = "unknown") -> dict[str, str]:
    """The trace id, the call's cost (USD; ``unknown`` when the model has no price, never 0, though a
    request refused before any upstream was asked costs 0; ``pending`` for a stream: its cost is on the
    trace when the stream ends) and the cache outcome."""
    cost_text = cost if isinstance(cost, str) else "unknown" if cost is None else f"{cost.total:.10f}"
    headers = {"x-pilothouse-trace-id": call.trace_id, "x-pilothouse-cost-usd": cost_text}
    if call.cache:
        headers["x-pilothouse-cache"] = call.cache
    return headers


def _cost(state: AppState, deployment: Deployment, served_model: str | None, usage: Usage) -> Cost | None:
    return state.pricer.call_cost(deployment.provider, deployment.model, served_model, usage)


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
        tags=tuple(t.strip() for t in request.headers.get(TAGS_HEADER, "").split(",") if t.strip()),
        trace_id=trace_id,
        parent_id=parent_id,
    )
    try:
        body = await read_json(request, state.settings.max_body_bytes)
    except ApiError as exc:
        cost = call.refused_cost()
        exc.headers.update(_headers(call, cost))
        _save(state, call.record(status=Status.ERROR, error=exc.message, http_status=exc.status, cost=cost))
        raise
    if isinstance(body, dict):
        call.request = body
        if isinstance(body.get("user"), str) and call.user_id is None:
            call.user_id = body["user"]
    return state, principal, call, body


def _cache_hit(
    state: AppState, call: GatewayCall, answer: CachedAnswer, stream_wire: OpenAIWire | AnthropicWire | None
) -> tuple[Cost, AsyncIterator[bytes] | None]:
    """Record a call answered from the cache (no tokens billed; the saving is the original cost) and,
    for a stream, the replayed events."""
    cost = Cost({"input": 0.0, "output": 0.0}, "cache", answer.cost_usd or 0.0)
    call.first_token()
    _save(state, call.record_answer(answer.response, answer.provider, answer.deployment, cost=cost))
    return cost, None if stream_wire is None else _replay(answer.response, stream_wire)


async def _replay(response: dict[str, Any], wire: OpenAIWire | AnthropicWire) -> AsyncIterator[bytes]:
    """A complete response (cached, or a cascade's) as the events of a stream."""
    for chunk in replay_chunks(response):
        if data := wire.chunk(chunk):
            yield data
    yield wire.end()


async def _cascade(
    state: AppState, principal: Principal, call: GatewayCall, cascade: Cascade, body: dict[str, Any]
) -> tuple[dict[str, Any], Cost | None]:
    """Serve a cascade route: each step is its own traced, priced generation (the answer's is the
    request's span, the rejected ones its children); the cost is their sum."""
    settings, verifier = cascade
    steps = await run_cascade(state.router, settings, verifier, body, call.attempts)
    total: Cost | None = Cost({})
    summary = []
    for position, step in enumerate(steps):
        usage = usage_from_openai(step.response.get("usage"))
        cost = _cost(state, step.deployment, step.response.get("model"), usage)
        total = None if total is None or cost is None else Cost({"steps": total.total + cost.total})
        await _count_tokens(state, principal, usage)
        verdict = step.verdict
        summary.append(
            {
                "model": step.model,
                "accepted": verdict is None or verdict.accepted,
                "score": verdict.score if verdict else None,
                "reason": verdict.reason if verdict else None,
                "cost_usd": cost.total if cost else None,
            }
        )
        last = position == len(steps) - 1
        step_call = (
            call
            if last
            else GatewayCall(
                project_id=call.project_id,
                operation="chat",
                request={**body, "model": step.model},
                key_id=call.key_id,
                user_id=call.user_id,
                trace_id=call.trace_id,
                parent_id=call.span_id,
                tags=call.tags,
            )
        )
        if last:
            call.extra["gateway.cascade"] = {"name": settings.name, "steps": summary, "escalations": position}
        record = step_call.record_answer(
            step.response, step.deployment.provider, step.deployment.id, usage=usage, cost=cost
        )
        _save(state, record)
    await settle_budget(state, call, total)
    return steps[-1].response, total


async def _succeeded(
    state: AppState,
    principal: Principal,
    call: GatewayCall,
    deployment: Deployment,
    response: dict[str, Any],
    output: str | None = None,
) -> tuple[Cost | None, BackgroundTask]:
    """A completed non-streamed call: its tokens counted against the key's limits and its budget hold
    settled; its cost, and the task that records it once the response is on its way (the client does
    not wait for the trace record and the metrics; the call's latency ends now)."""
    call.finish()
    usage = usage_from_openai(response.get("usage"))
    cost = _cost(state, deployment, response.get("model"), usage)
    await _count_tokens(state, principal, usage)
    await settle_budget(state, call, cost)

    async def record() -> None:  # async: Starlette runs it inline after the response, not in a thread
        provider, deployment_id = deployment.provider, deployment.id
        try:
            _save(
                state,
                call.record_answer(response, provider, deployment_id, usage=usage, cost=cost, output=output),
            )
        except Exception:
            log.exception("the trace of gateway call %s could not be recorded", call.trace_id)

    return cost, BackgroundTask(record)


async def _count_tokens(state: AppState, principal: Principal, usage: Usage) -> None:
    if principal.key is not None and principal.key.tpm is not None and usage.total:
        await state.limiter.add_tokens(principal.key.id, usage.total)


async def _fail(state: AppState, call: GatewayCall, exc: Exception) -> ApiError:
    """The client-facing error for ``exc``, recorded on the trace (and its budget hold released)."""
    await settle_budget(state, call, None)
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
    cost = call.refused_cost()
    error.headers.update(_headers(call, cost))
    _save(state, call.record(status=Status.ERROR, error=error.message, http_status=error.status, cost=cost))
    return error


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions`` (stream and non-stream)."""
    state, principal, call, body = await _start(request, "chat")
    try:
        check_chat_request(body)
        limit_headers = await admit(state, principal, body["model"])
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        cached = await caching.lookup(state, request.headers, call, body)
        if (answer := cached.answer) is not None:
            caching.maybe_verify(state, cached, call, body, _save)
            hit_cost, replay = _cache_hit(
                state, call, answer, OpenAIWire(client_wants_usage) if body.get("stream") else None
            )
            headers = {**_headers(call, hit_cost), **limit_headers}
            if replay is None:
                return FastJSONResponse(answer.response, headers=headers)
            return StreamingResponse(replay, media_type="text/event-stream", headers=headers)
        await reserve_budget(state, principal, call, body)
        if (cascade := state.cascades.get(body["model"])) is not None:
            response, cost = await _cascade(state, principal, call, cascade, body)
            headers = {**_headers(call, cost), **limit_headers}
            if not body.get("stream"):
                return FastJSONResponse(response, headers=headers)
            return StreamingResponse(
                _replay(response, OpenAIWire(client_wants_usage)),
                media_type="text/event-stream",
                headers=headers,
            )
        if not body.get("stream"):
            response, deployment = await state.router.chat(body, call.attempts)
            cost, record = await _succeeded(state, principal, call, deployment, response)
            await caching.store(state, cached, deployment, response, cost)
            headers = {**_headers(call, cost), **limit_headers}
            return FastJSONResponse(response, headers=headers, background=record)
        # Always ask the upstream for usage; pass the usage chunk on only if the client asked for it.
        upstream_request = {
            **body,
            "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
        }
        stream, deployment = await state.router.chat_stream(upstream_request, call.attempts)
    except (ApiError, InvalidRequest, UnknownModel, ProviderError) as exc:
        raise await _fail(state, call, exc) from None

    return _relay(
        state, principal, call, stream, deployment, OpenAIWire(client_wants_usage), limit_headers, cached
    )


def _relay(
    state: AppState,
    principal: Principal,
    call: GatewayCall,
    stream: AsyncIterator[dict[str, Any]],
    deployment: Deployment,
    wire: OpenAIWire | AnthropicWire,
    headers: dict[str, str],
    cached: caching.CacheOutcome | None = None,
) -> StreamingResponse:
    """Stream the upstream's chunks to the client in its wire format, and record the call when the
    stream ends: completed, failed after the first chunk (an error event ends it), or cut by the
    client (the upstream call is cancelled)."""

    async def events() -> AsyncIterator[bytes]:
        assembler = StreamAssembler()
        status, error = Status.OK, None
        timeout_s = state.router.config.router.timeout_s
        deadline = call.started + timeout_s  # the total timeout covers the whole stream
        chunks = aiter(stream)
        try:
            while True:
                # no yield inside the timeout: it only ever interrupts the wait for the upstream
                async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
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
        except TimeoutError:
            status, error = Status.ERROR, f"stream exceeded the total timeout of {timeout_s:g} s"
            yield wire.error(ProviderError(504, error, kind="timeout", code="timeout"), error)
        except BaseException:
            status, error = Status.ERROR, "client disconnected; upstream call cancelled"
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            final = assembler.response()
            usage = usage_from_openai(final.get("usage"))
            cost = _cost(state, deployment, final.get("model"), usage)
            await _count_tokens(state, principal, usage)
            # a stream cut before its usage arrived spent an unknown amount: keep its worst case
            await settle_budget(state, call, cost, unknown_is_worst_case=usage.is_empty)
            if status is Status.OK and cached is not None:
                await caching.store(state, cached, deployment, final, cost)
            record = call.record_answer(
                final, deployment.provider, deployment.id, usage=usage, cost=cost, status=status, error=error
            )
            _save(state, record)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={**_headers(call, "pending"), **headers}
    )


def _anthropic_error(error: ApiError) -> Response:
    body = {
        "type": "error",
        "error": {"type": ANTHROPIC_TYPES.get(error.status, "api_error"), "message": error.message},
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
        limit_headers = await admit(state, principal, body["model"])
        openai_request = messages_to_openai_request(body)
        call.request = openai_request  # recorded in one shape, whichever surface was used
        if isinstance(openai_request.get("user"), str) and call.user_id is None:
            call.user_id = openai_request["user"]
        cached = await caching.lookup(state, request.headers, call, openai_request)
        if (answer := cached.answer) is not None:
            caching.maybe_verify(state, cached, call, openai_request, _save)
            hit_cost, replay = _cache_hit(
                state, call, answer, AnthropicWire(body["model"]) if body.get("stream") else None
            )
            headers = {**_headers(call, hit_cost), **limit_headers}
            if replay is None:
                return FastJSONResponse(
                    openai_to_messages_response(answer.response, body["model"]), headers=headers
                )
            return StreamingResponse(replay, media_type="text/event-stream", headers=headers)
        await reserve_budget(state, principal, call, openai_request)
        if (cascade := state.cascades.get(body["model"])) is not None:
            response, cost = await _cascade(state, principal, call, cascade, openai_request)
            headers = {**_headers(call, cost), **limit_headers}
            if not body.get("stream"):
                return FastJSONResponse(openai_to_messages_response(response, body["model"]), headers=headers)
            stream_events = _replay(response, AnthropicWire(body["model"]))
            return StreamingResponse(stream_events, media_type="text/event-stream", headers=headers)
        if not body.get("stream"):
            response, deployment = await state.router.chat(openai_request, call.attempts)
            cost, record = await _succeeded(state, principal, call, deployment, response)
            await caching.store(state, cached, deployment, response, cost)
            message = openai_to_messages_response(response, body["model"])
            headers = {**_headers(call, cost), **limit_headers}
            return FastJSONResponse(message, headers=headers, background=record)
        upstream_request = {**openai_request, "stream_options": {"include_usage": True}}
        stream, deployment = await state.router.chat_stream(upstream_request, call.attempts)
    except (ApiError, InvalidRequest, UnknownModel, ProviderError) as exc:
        raise await _fail(state, call, exc) from None
    return _relay(
        state, principal, call, stream, deployment, AnthropicWire(body["model"]), limit_headers, cached
    )


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``."""
    state, principal, call, body = await _start(request, "embeddings")
    try:
        check_embeddings_request(body)
        limit_headers = await admit(state, principal, body["model"])
        await reserve_budget(state, principal, call, body)
        response, deployment = await state.router.embed(body, call.attempts)
    except (ApiError, InvalidRequest, UnknownModel, ProviderError) as exc:
        raise await _fail(state, call, exc) from None
    cost, record = await _succeeded(
        state, principal, call, deployment, response, f"{len(response.get('data') or [])} embeddings"
    )
    return FastJSONResponse(response, headers={**_headers(call, cost), **limit_headers}, background=record)


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the model names this gateway serves."""
    state = _state(request)
    await state.auth.authenticate(request, Scope.GATEWAY)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "pilothouse"}
        for name in [*state.router.model_names(), *state.cascades]
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
