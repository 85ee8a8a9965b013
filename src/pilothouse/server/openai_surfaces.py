"""More of OpenAI's API over the gateway's chat call: the Responses API (``POST /v1/responses``,
stream and non-stream, ``previous_response_id`` over stored responses; ``GET``/``DELETE
/v1/responses/{id}``), the legacy ``POST /v1/completions`` and ``GET /v1/models/{id}``. Like the
Anthropic surface, they only translate (``gateway/responses_format.py``,
``gateway/completions_format.py``) and hand one chat request to :class:`pilothouse.gateway.Gateway`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pilothouse.domain.keys import Scope
from pilothouse.gateway import GatewayError, GatewayReply
from pilothouse.gateway.client_names import RESPONSES_FORMAT, renamed
from pilothouse.gateway.completions_format import chat_to_completion, chunk_to_completion, completions_to_chat
from pilothouse.gateway.responses_format import (
    chat_request,
    chat_to_response,
    check_responses_request,
    input_items,
    output_messages,
)
from pilothouse.gateway.responses_stream import Event, ResponsesStreamEncoder
from pilothouse.gateway.stored_responses import StoredResponse, StoredResponses
from pilothouse.gateway.validation import InvalidRequest, check_chat_request
from pilothouse.server.errors import ApiError, FastJSONResponse, param_error
from pilothouse.server.gateway_api import _events, _recording, _start
from pilothouse.server.state import Services

log = logging.getLogger("pilothouse.gateway")

STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _services(request: Request) -> Services:
    services: Services = request.app.state.pilothouse
    return services


def _store(services: Services) -> StoredResponses:
    return services.responses


def _sse(events: list[Event]) -> bytes:
    return b"".join(f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n" for name, data in events)


_PENDING: set[asyncio.Future[bool]] = set()  # responses being stored after their stream ended


def _kept(task: asyncio.Future[bool]) -> None:
    _PENDING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("storing a streamed response failed: %s", task.exception())


class ResponsesWire:
    """Chat chunks as Responses API events; the finished response is stored (when asked) at the end."""

    def __init__(self, encoder: ResponsesStreamEncoder, keep: Any) -> None:
        self.encoder = encoder
        self._keep = keep  # called with the finished Response object, or None
        self._started = False

    def _opening(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        return self.encoder.start()

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return _sse(self._opening() + self.encoder.feed(chunk))

    def end(self) -> bytes:
        events = self._opening() + self.encoder.finish()
        if self._keep is not None:  # stored in the background: Redis is written within the event loop's
            task = asyncio.ensure_future(self._keep(self.encoder.response))  # next turns, before a
            _PENDING.add(task)  # client can read the last event and ask for the next turn
            task.add_done_callback(_kept)
        return _sse(events)

    def error(self, exc: GatewayError) -> bytes:
        exc = renamed(exc, RESPONSES_FORMAT)
        return _sse(self._opening() + self.encoder.fail(exc.code, exc.message))


async def create_response(request: Request) -> Response:
    """``POST /v1/responses``: the Responses API over any provider (OpenAI's errors, naming the
    client's ``text.format`` where the chat request it became has ``response_format``)."""
    try:
        return await _create_response(request)
    except GatewayError as exc:
        told = renamed(exc, RESPONSES_FORMAT)
        if told is exc:
            raise
        raise told from None


async def _create_response(request: Request) -> Response:
    gateway, caller, call, body = await _start(request, "chat")
    services = _services(request)
    store = _store(services)
    try:
        check_responses_request(body)
        history: list[dict[str, Any]] = []
        if (previous_id := body.get("previous_response_id")) is not None:
            previous = await store.aget(caller.project_id, previous_id)
            if previous is None:
                raise InvalidRequest(
                    400, f"Previous response with id '{previous_id[:64]}' not found.", "previous_response_id"
                )
            history = previous.messages
        chat = check_chat_request(chat_request(body, history))
    except InvalidRequest as exc:
        raise await gateway.fail(call, exc) from None
    except (TypeError, AttributeError, ValueError) as exc:  # a shape the checks did not foresee
        invalid = InvalidRequest(400, f"The request could not be read as a Responses request ({exc}).")
        raise await gateway.fail(call, invalid) from None
    # what a next turn continues: this one's messages without its instructions (not carried over)
    conversation = chat["messages"][1:] if body.get("instructions") else list(chat["messages"])
    response_id, created = f"resp_{uuid.uuid4().hex}", int(time.time())
    keep = None
    if body.get("store", True):

        def keep(response: dict[str, Any]) -> Awaitable[bool]:
            messages = conversation + output_messages(response)
            items = input_items(body.get("input"), response_id.removeprefix("resp_"))
            return store.aput(caller.project_id, StoredResponse(response, messages, items))

    reply = await gateway.chat(call, chat, caller)
    if reply.chunks is None:
        assert reply.response is not None
        response = chat_to_response(reply.response, body, response_id, created)
        if keep is not None:
            await keep(response)
        background = await _recording(reply, services)
        return FastJSONResponse(response, headers=reply.headers, background=background)
    wire = ResponsesWire(ResponsesStreamEncoder(body, response_id, created), keep)
    return _stream(reply, wire, services)


def _stream(reply: GatewayReply, wire: Any, services: Services) -> StreamingResponse:
    assert reply.chunks is not None
    return StreamingResponse(
        _events(reply.chunks, wire, services),
        media_type="text/event-stream",
        headers={**reply.headers, **STREAM_HEADERS},
    )


async def _stored(request: Request) -> tuple[Services, str, str]:
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.GATEWAY)
    return services, principal.project_id, request.path_params["response_id"]


def _not_found(response_id: str) -> ApiError:
    return ApiError(
        404, f"Response with id '{response_id[:64]}' not found.", code="not_found", param="response_id"
    )


async def get_response(request: Request) -> Response:
    """``GET /v1/responses/{id}``: a stored response of the caller's project."""
    services, project_id, response_id = await _stored(request)
    stored = await _store(services).aget(project_id, response_id)
    if stored is None:
        raise _not_found(response_id)
    return FastJSONResponse(stored.response)


async def list_input_items(request: Request) -> Response:
    """``GET /v1/responses/{id}/input_items?limit=20&order=desc&after=ID``: a stored response's input
    items, a page at a time."""
    services, project_id, response_id = await _stored(request)
    params = request.query_params
    limit_text, order, after = params.get("limit", "20"), params.get("order", "desc"), params.get("after")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise param_error("limit", "must be a whole number from 1 to 100")
    if order not in ("asc", "desc"):
        raise param_error("order", "must be 'asc' or 'desc'")
    stored = await _store(services).aget(project_id, response_id)
    if stored is None:
        raise _not_found(response_id)
    items = stored.input_items if order == "asc" else stored.input_items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise param_error("after", f"no input item {after[:64]!r} in this response")
        items = items[ids.index(after) + 1 :]
    page = items[: int(limit_text)]
    return FastJSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > len(page),
        }
    )


async def delete_response(request: Request) -> Response:
    """``DELETE /v1/responses/{id}``."""
    services, project_id, response_id = await _stored(request)
    if not await _store(services).adelete(project_id, response_id):
        raise _not_found(response_id)
    return FastJSONResponse({"id": response_id, "object": "response", "deleted": True})


class CompletionsWire:
    """Chat chunks as legacy ``text_completion`` chunks."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        if not chunk.get("choices") and (not chunk.get("usage") or not self.include_usage):
            return b""
        return b"data: " + orjson.dumps(chunk_to_completion(chunk, self.model)) + b"\n\n"

    def end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, exc: GatewayError) -> bytes:
        payload = {"error": {"message": exc.message, "type": exc.kind, "param": None, "code": exc.code}}
        return b"data: " + orjson.dumps(payload) + b"\n\n"


async def completions(request: Request) -> Response:
    """``POST /v1/completions`` (legacy): a prompt completed by any chat model."""
    gateway, caller, call, body = await _start(request, "chat")
    try:
        chat = check_chat_request(completions_to_chat(body))
    except InvalidRequest as exc:
        raise await gateway.fail(call, exc) from None
    except (TypeError, AttributeError, ValueError) as exc:  # a shape the checks did not foresee
        invalid = InvalidRequest(400, f"The request could not be read as a completions request ({exc}).")
        raise await gateway.fail(call, invalid) from None
    reply = await gateway.chat(call, chat, caller)
    services = _services(request)
    if reply.chunks is None:
        assert reply.response is not None
        completion = chat_to_completion(reply.response, chat["model"])
        background = await _recording(reply, services)
        return FastJSONResponse(completion, headers=reply.headers, background=background)
    include_usage = bool((chat.get("stream_options") or {}).get("include_usage"))
    return _stream(reply, CompletionsWire(chat["model"], include_usage), services)


def visible_models(services: Services, request_key: Any) -> list[str]:
    """The model names the caller's key may call (every one for the admin secret)."""
    names = services.gateway.model_names()
    return names if request_key is None else [n for n in names if request_key.may_use(n)]


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "pilothouse"}


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the model names this gateway serves that the caller's key may call."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.GATEWAY)
    names = visible_models(services, principal.key)
    if "anthropic-version" in request.headers:  # an Anthropic client: Anthropic's page shape
        return FastJSONResponse(anthropic_model_page(names))
    return FastJSONResponse({"object": "list", "data": [_model(name) for name in names]})


def anthropic_model_page(names: list[str]) -> dict[str, Any]:
    """Anthropic's ``GET /v1/models`` shape (one page holding every model)."""
    data = [
        {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}
        for name in names
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{id}``: one model the caller's key may call (404 otherwise, as for an
    unknown one: a key does not learn what it may not call)."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.GATEWAY)
    name = request.path_params["model_id"]
    key, router = principal.key, services.gateway.router
    # the key's allow-list first: a key does not make wildcard routes' deployments it may not call
    allowed = key is None or key.may_use(name)
    if not allowed or (
        name not in services.gateway.model_names() and router.resolve(name) not in router.deployments
    ):
        raise ApiError(
            404, f"The model '{name[:200]}' does not exist.", code="model_not_found", param="model"
        )
    return FastJSONResponse(_model(name))


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
]
