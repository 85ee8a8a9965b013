"""What every ``/v1`` answer carries for the official clients, and how those clients reach it: a request
id (``x-request-id`` on OpenAI's surfaces, ``request-id`` on Anthropic's, which their SDKs expose as
``_request_id``; the call's trace id when it has one, so a support request leads to the trace), OpenAI's
routes without the ``/v1`` prefix (clients configured with a bare host), and CORS for the browser
origins the settings allow."""

from __future__ import annotations

import uuid

from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Scope, Send

TRACE_HEADER = "x-pilothouse-trace-id"
EXPOSED_HEADERS = [
    "x-request-id",
    "request-id",
    TRACE_HEADER,
    "x-pilothouse-cost-usd",
    "x-pilothouse-cache",
    "x-pilothouse-upstream-request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-should-retry",
    "retry-after",
]

_UNPREFIXED = ("/chat/completions", "/embeddings", "/responses", "/completions")
_NEEDS_KEY = ("/models",)  # also a page of the web UI: an API client's only when it sends a key


def request_id_header(path: str) -> str:
    """The request id's header on ``path``: Anthropic's name on its surface, OpenAI's elsewhere."""
    return "request-id" if path.startswith("/v1/messages") else "x-request-id"


def new_request_id(trace_id: str | None = None) -> str:
    """A request id: of the call's trace when there is one."""
    return f"req_{trace_id or uuid.uuid4().hex}"


def add_request_id(response: Response, path: str) -> None:
    """Give a ``/v1`` response its request id, unless it has one."""
    if not path.startswith("/v1/") or path == "/v1/traces":
        return
    headers = response.headers
    name = request_id_header(path)
    if name not in headers:
        headers[name] = new_request_id(headers.get(TRACE_HEADER))


def with_request_id(send: Send, path: str) -> Send:
    """``send``, adding a request id to the response's headers (routes past the fast path)."""
    name = request_id_header(path).encode()

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(key.lower() == name for key, _ in headers):
                trace = next((v.decode() for k, v in headers if k.lower() == TRACE_HEADER.encode()), None)
                headers.append((name, new_request_id(trace).encode()))
            message = {**message, "headers": headers}
        await send(message)

    return sending


def unprefixed_path(scope: Scope) -> str | None:
    """The ``/v1`` path of an OpenAI route asked for without its prefix (None for any other path)."""
    path: str = scope.get("path", "")
    if path.startswith(_UNPREFIXED):
        return "/v1" + path
    if path.startswith(_NEEDS_KEY) and any(
        key == b"authorization" and value[:7].lower() == b"bearer " for key, value in scope.get("headers", [])
    ):
        return "/v1" + path
    return None


def cors_middleware(app: ASGIApp, origins: list[str]) -> ASGIApp:
    """``app`` answering browsers of ``origins`` (``*``: any), preflight included; the gateway's
    headers readable by their scripts."""
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
