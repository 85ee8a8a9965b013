"""The provider protocol: one upstream model API behind a narrow interface.

Requests and responses are OpenAI chat-completion dicts (the lingua franca of the gateway); a
provider for another API (Anthropic) translates both ways.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from pilothouse.domain.redaction import redact_url


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: each entry is its own upstream
class Deployment:
    """One upstream that can serve a model name: which provider, which upstream model, where."""

    name: str  # the model name clients ask for
    provider: str  # openai | anthropic | local | sim
    model: str  # the upstream model id (also the price lookup key)
    base_url: str | None = None
    api_key: str | None = None
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific settings

    @property
    def id(self) -> str:
        """A readable identity for logs, traces and metrics (a password in the URL redacted)."""
        where = redact_url(self.base_url) if self.base_url else "default"
        return f"{self.provider}/{self.model}@{where}"


class ProviderError(Exception):
    """An upstream failure, described the way the gateway needs to decide and to answer.

    ``retryable``: another attempt (same or other deployment) may succeed (429, 5xx, timeouts,
    connection errors). ``fallback``: a fallback model may succeed though a retry would not (context
    window, content policy)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "server_error",
        code: str | None = None,
        retryable: bool = False,
        fallback: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.retryable = retryable
        self.fallback = fallback or retryable
        self.retry_after_s = retry_after_s

    @classmethod
    def from_status(cls, status: int, message: str, retry_after_s: float | None = None) -> ProviderError:
        """Classify an upstream HTTP error status."""
        lowered = message.lower()
        if status == 429:
            return cls(
                429,
                message,
                kind="rate_limit_error",
                code="rate_limit_exceeded",
                retryable=True,
                retry_after_s=retry_after_s,
            )
        if status >= 500 or status == 408:
            return cls(status, message, kind="server_error", retryable=True, retry_after_s=retry_after_s)
        context = "context" in lowered and ("length" in lowered or "window" in lowered)
        policy = "content" in lowered and ("policy" in lowered or "filter" in lowered)
        if status == 400 and (context or policy):
            code = "context_length_exceeded" if context else "content_policy_violation"
            return cls(400, message, kind="invalid_request_error", code=code, fallback=True)
        kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
        return cls(status, message, kind=kinds.get(status, "invalid_request_error"))


outgoing_traceparent: ContextVar[str | None] = ContextVar("pilothouse_outgoing_traceparent", default=None)
"""The W3C ``traceparent`` of the gateway call being served (set by the gateway): sent upstream, so
that a chained gateway or an instrumented model server records its span in the same trace."""


def request_headers(extra: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """One upstream request's own headers: ``extra`` and the call's ``traceparent`` (None: none)."""
    parent = outgoing_traceparent.get()
    if parent is None:
        return dict(extra) if extra else None
    return {**(extra or {}), "traceparent": parent}


upstream_request_id: ContextVar[str | None] = ContextVar("pilothouse_upstream_request_id", default=None)
"""The request id the upstream gave its answer (OpenAI's ``x-request-id``, Anthropic's ``request-id``),
set by the provider when the answer's headers arrive; the router records it on the attempt."""

UPSTREAM_REQUEST_ID_HEADERS = ("x-request-id", "request-id")


def note_upstream_request_id(headers: Any) -> None:
    """Remember the upstream's request id from ``headers`` (a case-insensitive mapping), if it sent one
    (at most 200 characters: an id, never a payload)."""
    for name in UPSTREAM_REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            upstream_request_id.set(str(value)[:200])
            return


UNREADABLE = "upstream_unreadable"  # the error code of an upstream answer that cannot be read


def upstream_json(data: bytes | str) -> dict[str, Any]:
    """A JSON object from an upstream; anything else is a retryable 502 (a broken upstream, not a bug
    of ours)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderError(502, "upstream sent invalid JSON", code=UNREADABLE, retryable=True) from None
    if not isinstance(value, dict):
        raise ProviderError(
            502, "upstream answered with something other than a JSON object", code=UNREADABLE, retryable=True
        )
    return value


class Provider(Protocol):
    """What the gateway needs from an upstream."""

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        """A chat completion (OpenAI response dict) for an OpenAI request dict (``stream`` false)."""
        ...

    def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The chunks (OpenAI ``chat.completion.chunk`` dicts) of a streamed completion."""
        ...

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        """Embeddings (OpenAI response dict) for an OpenAI embeddings request."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
