"""``instrument_anthropic()``: every ``anthropic`` Messages call becomes a generation (request,
response, usage with cache tokens, TTFT for streams, errors)."""

from __future__ import annotations

import functools
from typing import Any

from pilothouse.tracing.instrumentation import (
    ModelCall,
    TracedAsyncStream,
    TracedStream,
    dump,
    is_raw,
    patch,
    record_answer,
    record_answer_async,
    unpatch,
)

_patched: list[tuple[type, str, Any]] = []
_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "max_tokens": "gen_ai.request.max_tokens",
}


def _usage_attributes(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's input_tokens exclude cache reads and writes; the GenAI convention's include them."""
    read = usage.get("cache_read_input_tokens") or 0
    write = usage.get("cache_creation_input_tokens") or 0
    return {
        "gen_ai.usage.input_tokens": (usage.get("input_tokens") or 0) + read + write,
        "gen_ai.usage.output_tokens": usage.get("output_tokens"),
        "gen_ai.usage.cache_read.input_tokens": read,
        "gen_ai.usage.cache_creation.input_tokens": write,
    }


def _request(kwargs: dict[str, Any]) -> dict[str, Any]:
    messages = dump(list(kwargs.get("messages") or []))
    system = kwargs.get("system")
    if system:
        messages = [{"role": "system", "content": dump(system)}, *messages]
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": kwargs.get("model"),
        "gen_ai.input.messages": messages,
        "gen_ai.request.tools": dump(kwargs.get("tools")) if kwargs.get("tools") else None,
    }
    for key, attr in _PARAMS.items():
        value = kwargs.get(key)
        if isinstance(value, int | float):
            attrs[attr] = value
    if kwargs.get("stop_sequences"):
        attrs["gen_ai.request.stop_sequences"] = list(kwargs["stop_sequences"])
    if kwargs.get("stream"):
        attrs["gen_ai.is_streaming"] = True
    return attrs


def _output_message(content: list[dict[str, Any]]) -> dict[str, Any]:
    text = "".join(block.get("text", "") for block in content if block.get("type") == "text")
    tool_calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": b.get("input")},
        }
        for b in content
        if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _response(call: ModelCall, response: Any) -> None:
    data = dump(response)
    call.set(
        {
            "gen_ai.response.model": data.get("model"),
            "gen_ai.response.id": data.get("id"),
            "gen_ai.response.finish_reasons": [str(data.get("stop_reason"))],
            "gen_ai.output.messages": [_output_message(data.get("content") or [])],
            **_usage_attributes(data.get("usage") or {}),
        }
    )


class _StreamState:
    """Rebuilds the message from stream events (message_start, content blocks, message_delta)."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        self.message: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] = {}

    def on_event(self, event: Any) -> None:
        data = dump(event)
        kind = data.get("type")
        if kind == "message_start":
            self.message = data.get("message") or {}
            self.usage.update(self.message.get("usage") or {})
        elif kind == "content_block_start":
            block = dict(data.get("content_block") or {})
            if block.get("type") == "tool_use":
                block["input"] = ""
            self.blocks[data.get("index", 0)] = block
        elif kind == "content_block_delta":
            block = self.blocks.setdefault(data.get("index", 0), {"type": "text", "text": ""})
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                block["input"] = block.get("input", "") + delta.get("partial_json", "")
        elif kind == "message_delta":
            self.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop:
                self.message["stop_reason"] = stop

    def on_done(self) -> None:
        content = [b for _, b in sorted(self.blocks.items())]
        self.call.set(
            {
                "gen_ai.response.model": self.message.get("model"),
                "gen_ai.response.id": self.message.get("id"),
                "gen_ai.response.finish_reasons": [str(self.message.get("stop_reason"))],
                "gen_ai.output.messages": [_output_message(content)],
                **_usage_attributes(self.usage),
            }
        )


def _wrapper(original: Any) -> Any:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = ModelCall(f"chat {kwargs.get('model', '')}".strip(), _request(kwargs))
        try:
            response = original(self, *args, **call.with_trace_headers(kwargs))
        except BaseException as exc:
            call.fail(exc)
            raise
        if kwargs.get("stream") and not is_raw(response):
            state = _StreamState(call)
            return TracedStream(response, call, state.on_event, state.on_done)
        if kwargs.get("stream"):  # a raw stream (with_raw_response): its body is the caller's to read
            call.end()
            return response
        record_answer(call, _response, response)
        return response

    return create


def _async_wrapper(original: Any) -> Any:
    @functools.wraps(original)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = ModelCall(f"chat {kwargs.get('model', '')}".strip(), _request(kwargs))
        try:
            response = await original(self, *args, **call.with_trace_headers(kwargs))
        except BaseException as exc:
            call.fail(exc)
            raise
        if kwargs.get("stream") and not is_raw(response):
            state = _StreamState(call)
            return TracedAsyncStream(response, call, state.on_event, state.on_done)
        if kwargs.get("stream"):  # a raw stream (with_raw_response): its body is the caller's to read
            call.end()
            return response
        await record_answer_async(call, _response, response)
        return response

    return create


class _TracedManager:
    """``client.messages.stream(...)``: the SDK's stream manager, with its raw event stream traced and
    the call ended when the ``with`` block exits (also when the stream was not read to the end)."""

    def __init__(self, manager: Any, call: ModelCall, is_async: bool) -> None:
        self._manager = manager
        self._call = call
        self._stream: TracedStream | TracedAsyncStream | None = None
        attribute = f"_{type(manager).__name__}__api_request"
        request = getattr(manager, attribute)
        state = _StreamState(call)
        if is_async:

            async def traced_async() -> Any:
                try:
                    raw = await request
                except BaseException as exc:
                    call.fail(exc)
                    raise
                self._stream = TracedAsyncStream(raw, call, state.on_event, state.on_done)
                return self._stream

            setattr(manager, attribute, traced_async())
        else:

            def traced() -> Any:
                try:
                    raw = request()
                except BaseException as exc:
                    call.fail(exc)
                    raise
                self._stream = TracedStream(raw, call, state.on_event, state.on_done)
                return self._stream

            setattr(manager, attribute, traced)

    def __enter__(self) -> Any:
        return self._manager.__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            self._manager.__exit__(*exc)
        finally:
            if self._stream is not None:
                self._stream.finish()

    async def __aenter__(self) -> Any:
        return await self._manager.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._manager.__aexit__(*exc)
        finally:
            if self._stream is not None:
                self._stream.finish()


def _stream_wrapper(is_async: bool) -> Any:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
            call = ModelCall(
                f"chat {kwargs.get('model', '')}".strip(), {**_request(kwargs), "gen_ai.is_streaming": True}
            )
            manager = original(self, *args, **call.with_trace_headers(kwargs))
            if not hasattr(manager, f"_{type(manager).__name__}__api_request"):
                call.end()  # an SDK version this wrapper does not know: leave it untraced
                return manager
            return _TracedManager(manager, call, is_async)

        return stream

    return make


def instrument_anthropic() -> None:
    """Trace every ``anthropic`` ``messages.create`` call (sync and async, ``stream=True`` included)
    and ``messages.stream(...)``."""
    try:
        from anthropic.resources import messages
    except ImportError:
        raise ImportError(
            "instrument_anthropic() needs the anthropic package: pip install anthropic"
        ) from None
    patch(messages.Messages, "create", _wrapper, _patched)
    patch(messages.AsyncMessages, "create", _async_wrapper, _patched)
    patch(messages.Messages, "stream", _stream_wrapper(is_async=False), _patched)
    patch(messages.AsyncMessages, "stream", _stream_wrapper(is_async=True), _patched)


def uninstrument_anthropic() -> None:
    """Undo :func:`instrument_anthropic`."""
    unpatch(_patched)
