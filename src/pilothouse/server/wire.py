"""Server-sent event encoders of the two streaming surfaces: OpenAI chat completion chunks and
Anthropic Messages stream events, fed with OpenAI-format chunks from any provider (or the cache)."""

from __future__ import annotations

from typing import Any

import orjson

from pilothouse.gateway import GatewayError
from pilothouse.gateway.client_names import MESSAGES_FORMAT, renamed
from pilothouse.providers.anthropic_format import MessagesStreamEncoder
from pilothouse.providers.anthropic_native import NATIVE

ANTHROPIC_TYPES = {
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

    def error(self, exc: GatewayError) -> bytes:
        payload = {"error": {"message": exc.message, "type": exc.kind, "param": None, "code": exc.code}}
        return b"data: " + orjson.dumps(payload) + b"\n\n"


class AnthropicWire:
    """Chunks as Anthropic Messages stream events."""

    def __init__(self, model: str) -> None:
        self.encoder = MessagesStreamEncoder(model)
        self.native = False  # the upstream's own events are passed on (an Anthropic deployment)

    @staticmethod
    def _events(events: list[tuple[str, dict[str, Any]]]) -> bytes:
        return b"".join(
            f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n" for name, data in events
        )

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        if NATIVE in chunk:  # an Anthropic upstream's event, as it sent it (None: already sent)
            self.native = True
            event = chunk[NATIVE]
            return self._events([(str(event.get("type")), event)]) if event else b""
        return self._events(self.encoder.feed(chunk))

    def end(self) -> bytes:
        return b"" if self.native else self._events(self.encoder.finish())

    def error(self, exc: GatewayError) -> bytes:
        exc = renamed(exc, MESSAGES_FORMAT)
        kind = ANTHROPIC_TYPES.get(exc.status, "api_error")
        return self._events([("error", {"type": "error", "error": {"type": kind, "message": exc.message}})])
