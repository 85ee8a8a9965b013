"""What the openai and anthropic instrumentors share: a model-call span and stream wrappers that
end it when the stream is used up, closed or fails."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Status, StatusCode

from pilothouse.tracing.observe import to_json_text
from pilothouse.tracing.sdk import get_tracer

log = logging.getLogger("pilothouse.sdk")


class ModelCall:
    """One traced model call: request attributes at start, response attributes and the end later."""

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        clean = {k: v for k, v in attributes.items() if v is not None}
        self.span = get_tracer().start_span(name, kind=otel_trace.SpanKind.CLIENT, attributes=clean)
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.ended = False

    def context(self) -> Any:
        """OpenTelemetry context with this call's span current (for nested HTTP instrumentation)."""
        return otel_trace.set_span_in_context(self.span)

    def with_trace_headers(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` plus ``extra_headers`` carrying this call's W3C ``traceparent``, so that a
        Pilothouse gateway (or any traced server) nests its own spans under this call."""
        headers = dict(kwargs.get("extra_headers") or {})
        propagate.inject(headers, context=self.context())
        return {**kwargs, "extra_headers": headers}

    def first_token(self) -> None:
        """Mark the time to first token (once)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.span.set_attribute("pilothouse.ttft_ms", (self.first_token_at - self.started) * 1000)

    def set(self, attributes: dict[str, Any]) -> None:
        """Set attributes, skipping None values; dicts and lists become JSON text."""
        for key, value in attributes.items():
            if value is None:
                continue
            if isinstance(value, dict | list) and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                value = to_json_text(value)
            self.span.set_attribute(key, value)

    def fail(self, exc: BaseException) -> None:
        """Record an error and end the span."""
        if self.ended:
            return
        self.span.record_exception(exc)
        self.span.set_attribute("error.type", type(exc).__name__)
        self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.end()

    def end(self) -> None:
        """End the span (idempotent)."""
        if not self.ended:
            self.ended = True
            self.span.end()


class TracedStream:
    """Wraps a sync SDK stream: passes every item through, feeds it to ``on_item``, and calls
    ``on_done`` once when the stream is exhausted or closed; errors end the call as failed."""

    def __init__(
        self, stream: Any, call: ModelCall, on_item: Callable[[Any], None], on_done: Callable[[], None]
    ):
        self._stream = stream
        self._call = call
        self._on_item = on_item
        self._on_done = on_done

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self._stream:
                self._call.first_token()
                self._on_item(item)
                yield item
        except BaseException as exc:
            self._call.fail(exc)
            raise
        self.finish()

    def __next__(self) -> Any:
        try:
            item = next(self._stream)
        except StopIteration:
            self.finish()
            raise
        except BaseException as exc:
            self._call.fail(exc)
            raise
        self._call.first_token()
        self._on_item(item)
        return item

    def finish(self) -> None:
        """End the call with what was received (idempotent)."""
        if not self._call.ended:
            self._on_done()
            self._call.end()

    def close(self) -> None:
        """Close the underlying stream and end the call with what was received."""
        try:
            self._stream.close()
        finally:
            self.finish()

    def __enter__(self) -> TracedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class TracedAsyncStream:
    """The async twin of :class:`TracedStream`."""

    def __init__(
        self, stream: Any, call: ModelCall, on_item: Callable[[Any], None], on_done: Callable[[], None]
    ):
        self._stream = stream
        self._call = call
        self._on_item = on_item
        self._on_done = on_done

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for item in self._stream:
                self._call.first_token()
                self._on_item(item)
                yield item
        except BaseException as exc:
            self._call.fail(exc)
            raise
        self.finish()

    async def __anext__(self) -> Any:
        try:
            item = await self._stream.__anext__()
        except StopAsyncIteration:
            self.finish()
            raise
        except BaseException as exc:
            self._call.fail(exc)
            raise
        self._call.first_token()
        self._on_item(item)
        return item

    def finish(self) -> None:
        """End the call with what was received (idempotent)."""
        if not self._call.ended:
            self._on_done()
            self._call.end()

    async def close(self) -> None:
        """Close the underlying stream and end the call with what was received."""
        try:
            await self._stream.close()
        finally:
            self.finish()

    async def __aenter__(self) -> TracedAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def is_raw(response: Any) -> bool:
    """Whether an SDK call returned its HTTP response rather than the parsed answer: the
    ``with_raw_response`` and ``with_streaming_response`` forms of the openai and anthropic clients."""
    return hasattr(response, "http_response") and callable(getattr(response, "parse", None))


def _body_read(response: Any) -> bool:
    """Whether the raw response's body was read already (``with_raw_response``), rather than left for
    the caller to read (``with_streaming_response``): reading it here would take it from them."""
    try:
        response.http_response.content  # noqa: B018 (httpx raises ResponseNotRead for an unread body)
    except Exception:
        return False
    return True


def parsed_answer(response: Any) -> Any | None:
    """The answer to record of a non-streamed call: the response itself, or for ``with_raw_response``
    what its ``parse()`` gives (the SDKs cache it, so the caller's own ``parse()`` returns the same
    object); None for a body the caller has not read yet, or one whose ``parse()`` must be awaited
    (:func:`parsed_answer_async`)."""
    if not is_raw(response):
        return response
    if not _body_read(response):
        return None
    answer = response.parse()
    if inspect.iscoroutine(answer):
        answer.close()  # an async parse, not awaited here: unrecorded, and no "never awaited" warning
        return None
    return answer


async def parsed_answer_async(response: Any) -> Any | None:
    """:func:`parsed_answer` for the async clients, whose raw responses may parse asynchronously."""
    if not is_raw(response):
        return response
    if not _body_read(response):
        return None
    answer = response.parse()
    return await answer if inspect.isawaitable(answer) else answer


def record_answer(call: ModelCall, record: Callable[[ModelCall, Any], None], response: Any) -> None:
    """``record(call, answer)`` with the answer of a non-streamed ``response`` (:func:`parsed_answer`),
    then end the call; a failure to read it is logged and never reaches the application, whose call
    succeeded."""
    try:
        answer = parsed_answer(response)
        if answer is not None:
            record(call, answer)
    except Exception:
        log.warning("pilothouse: could not record the answer of a model call", exc_info=True)
    finally:
        call.end()


async def record_answer_async(
    call: ModelCall, record: Callable[[ModelCall, Any], None], response: Any
) -> None:
    """:func:`record_answer` for the async clients."""
    try:
        answer = await parsed_answer_async(response)
        if answer is not None:
            record(call, answer)
    except Exception:
        log.warning("pilothouse: could not record the answer of a model call", exc_info=True)
    finally:
        call.end()


def dump(obj: Any) -> Any:
    """Plain data of an SDK object (pydantic models -> dicts)."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_none=True)
    if isinstance(obj, list | tuple):
        return [dump(o) for o in obj]
    if isinstance(obj, dict):
        return {k: dump(v) for k, v in obj.items()}
    return obj


def patch(
    owner: type, method: str, make_wrapper: Callable[[Any], Any], registry: list[tuple[type, str, Any]]
) -> None:
    """Replace ``owner.method`` with ``make_wrapper(original)`` once; remember how to undo it."""
    original = owner.__dict__.get(method)
    if original is None or getattr(original, "__pilothouse_wrapped__", False):
        return
    wrapper = make_wrapper(original)
    wrapper.__pilothouse_wrapped__ = True
    setattr(owner, method, wrapper)
    registry.append((owner, method, original))


def unpatch(registry: list[tuple[type, str, Any]]) -> None:
    """Undo :func:`patch` for every entry of ``registry``."""
    while registry:
        owner, method, original = registry.pop()
        setattr(owner, method, original)
