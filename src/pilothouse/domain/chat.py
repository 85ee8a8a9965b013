"""The one way Pilothouse calls a chat model: :class:`ChatModel`, a request in OpenAI's chat-completions
shape in, a :class:`ChatReply` (the response, its usage, cost and trace) out, or a stream of chunks.

Eval targets, judges, cascade verifiers and whatever else needs a model call it through this interface.
Two adapters implement it (:mod:`pilothouse.gateway`): in-process through the gateway (routing,
retries, fallbacks, pricing, and a span for every call), and HTTP to any OpenAI-compatible endpoint
(another Pilothouse gateway, vLLM, OpenAI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from pilothouse.domain.money import Money
from pilothouse.domain.traces import SpanRecord, TraceAttributes, Usage

__all__ = [
    "CallContext",
    "ChatModel",
    "ChatReply",
    "ChatStream",
    "ModelCallError",
    "SpanSink",
    "current_call",
]

SpanSink = Callable[[SpanRecord], None]  # where the spans of in-process calls go


@dataclass(frozen=True, slots=True)
class CallContext:
    """Where a call belongs: the trace it is recorded in (and the span it hangs under), the project,
    the span's name, extra span attributes, and the trace-level facts of a trace the call starts."""

    trace_id: str
    project_id: str = "default"
    parent_id: str | None = None
    name: str | None = None  # the span's name; default "chat <model>"
    attributes: Mapping[str, Any] = field(default_factory=dict)
    trace: TraceAttributes | None = None

    def traceparent(self, span_id: str) -> str:
        """The W3C ``traceparent`` header that puts a call made elsewhere (over HTTP) in this trace."""
        return f"00-{self.trace_id}-{span_id}-01"

    def named(self, name: str | None) -> CallContext:
        """The same context for a span named ``name`` (built directly: ``dataclasses.replace`` costs
        several times more, once per eval call)."""
        return CallContext(self.trace_id, self.project_id, self.parent_id, name, self.attributes, self.trace)


# The call the current task serves or evaluates (an eval item, a cascade request): calls made on its
# behalf deeper down (a judge's) are recorded in its trace and project.
current_call: ContextVar[CallContext | None] = ContextVar("pilothouse_current_call", default=None)


@dataclass(frozen=True, slots=True)
class ChatReply:
    """A chat completion (OpenAI's response shape) and what the call cost (None: unknown, never 0)."""

    response: Mapping[str, Any]
    usage: Usage | None
    cost_usd: Money | None
    latency_ms: float
    trace_id: str | None

    @property
    def text(self) -> str:
        """The first choice's text ("" when it has none, e.g. only tool calls)."""
        choices = self.response.get("choices") or []
        content = (choices[0].get("message") or {}).get("content") if choices else None
        return content if isinstance(content, str) else ""


class ChatStream:
    """A streamed reply: iterate for the chunks (OpenAI ``chat.completion.chunk`` dicts); once they are
    all read, :attr:`reply` holds the whole answer with its usage and cost."""

    def __init__(self, chunks: AsyncIterator[dict[str, Any]]) -> None:
        self._chunks = chunks
        self.reply: ChatReply | None = None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks

    async def aclose(self) -> None:
        """Stop early (the upstream call is cancelled)."""
        await self._chunks.aclose()  # type: ignore[attr-defined]


class ModelCallError(Exception):
    """A call that failed. ``retryable``: another try may succeed (429, 5xx, timeouts, connection
    errors); ``status``: the HTTP status when there was one; ``retry_after_s``: what the server asked."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


class ChatModel(Protocol):
    """A chat model to call: ``start`` before the first call, ``close`` after the last."""

    model: str

    def describe(self) -> str:
        """Where calls go, in words."""
        ...

    def endpoint(self) -> str:
        """What identifies where calls go, for response caches (never a secret)."""
        ...

    async def start(self, spans: SpanSink | None = None) -> None:
        """Open connections; ``spans`` receives the spans of calls recorded in-process."""
        ...

    async def chat(self, request: dict[str, Any], context: CallContext) -> ChatReply:
        """One completion (``stream`` is ignored); raises :class:`ModelCallError`."""
        ...

    async def stream(self, request: dict[str, Any], context: CallContext) -> ChatStream:
        """A streamed completion; raises :class:`ModelCallError` before the first chunk, and while
        iterating when the stream breaks."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...
