"""``instrument_openai()``: every chat completion and embedding made with the official ``openai``
client becomes a generation (request, response, usage, TTFT for streams, errors), OTel GenAI style."""

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
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
}


def _usage_attributes(usage: Any) -> dict[str, Any]:
    if usage is None:
        return {}
    u = dump(usage)
    return {
        "gen_ai.usage.input_tokens": u.get("prompt_tokens"),
        "gen_ai.usage.output_tokens": u.get("completion_tokens"),
        "gen_ai.usage.cache_read.input_tokens": (u.get("prompt_tokens_details") or {}).get("cached_tokens"),
        "gen_ai.usage.reasoning.output_tokens": (u.get("completion_tokens_details") or {}).get(
            "reasoning_tokens"
        ),
    }


def _chat_request(kwargs: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": kwargs.get("model"),
        "gen_ai.input.messages": dump(list(kwargs.get("messages") or [])),
        "gen_ai.request.tools": dump(kwargs.get("tools")) if kwargs.get("tools") else None,
    }
    for key, attr in _PARAMS.items():
        value = kwargs.get(key)
        if isinstance(value, int | float | str | bool):
            attrs[attr] = value
    stop = kwargs.get("stop")
    if stop:
        attrs["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if kwargs.get("stream"):
        attrs["gen_ai.is_streaming"] = True
    return attrs


def _chat_response(call: ModelCall, response: Any) -> None:
    data = dump(response)
    choices = data.get("choices") or []
    call.set(
        {
            "gen_ai.response.model": data.get("model"),
            "gen_ai.response.id": data.get("id"),
            "gen_ai.response.finish_reasons": [str(c.get("finish_reason")) for c in choices],
            "gen_ai.output.messages": [c.get("message", {}) for c in choices],
            **_usage_attributes(response.usage if hasattr(response, "usage") else None),
        }
    )


class _ChatStreamState:
    """Rebuilds the answer from chunks so the span carries the whole output and the usage."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        self.model: str | None = None
        self.id: str | None = None
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None

    def on_chunk(self, chunk: Any) -> None:
        self.model = getattr(chunk, "model", None) or self.model
        self.id = getattr(chunk, "id", None) or self.id
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            state = self.choices.setdefault(choice.index, {"role": "assistant", "content": ""})
            delta = choice.delta
            if delta is not None and delta.content:
                state["content"] += delta.content
            for tc in (delta.tool_calls if delta is not None else None) or []:
                calls = state.setdefault("tool_calls", {})
                entry = calls.setdefault(
                    tc.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                entry["id"] = tc.id or entry["id"]
                if tc.function is not None:
                    entry["function"]["name"] += tc.function.name or ""
                    entry["function"]["arguments"] += tc.function.arguments or ""
            if choice.finish_reason:
                state["finish_reason"] = choice.finish_reason

    def on_done(self) -> None:
        messages = []
        reasons = []
        for _, state in sorted(self.choices.items()):
            reasons.append(str(state.pop("finish_reason", None)))
            if "tool_calls" in state:
                state["tool_calls"] = [v for _, v in sorted(state["tool_calls"].items())]
            messages.append(state)
        self.call.set(
            {
                "gen_ai.response.model": self.model,
                "gen_ai.response.id": self.id,
                "gen_ai.response.finish_reasons": reasons,
                "gen_ai.output.messages": messages,
                **_usage_attributes(self.usage),
            }
        )


def _chat_wrapper(original: Any) -> Any:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = ModelCall(f"chat {kwargs.get('model', '')}".strip(), _chat_request(kwargs))
        try:
            response = original(self, *args, **call.with_trace_headers(kwargs))
        except BaseException as exc:
            call.fail(exc)
            raise
        if kwargs.get("stream") and not is_raw(response):
            state = _ChatStreamState(call)
            return TracedStream(response, call, state.on_chunk, state.on_done)
        if kwargs.get("stream"):  # a raw stream (with_raw_response): its body is the caller's to read
            call.end()
            return response
        record_answer(call, _chat_response, response)
        return response

    return create


def _async_chat_wrapper(original: Any) -> Any:
    @functools.wraps(original)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = ModelCall(f"chat {kwargs.get('model', '')}".strip(), _chat_request(kwargs))
        try:
            response = await original(self, *args, **call.with_trace_headers(kwargs))
        except BaseException as exc:
            call.fail(exc)
            raise
        if kwargs.get("stream") and not is_raw(response):
            state = _ChatStreamState(call)
            return TracedAsyncStream(response, call, state.on_chunk, state.on_done)
        if kwargs.get("stream"):  # a raw stream (with_raw_response): its body is the caller's to read
            call.end()
            return response
        await record_answer_async(call, _chat_response, response)
        return response

    return create


def _embedding_request(kwargs: dict[str, Any]) -> dict[str, Any]:
    text = kwargs.get("input")
    return {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": kwargs.get("model"),
        "pilothouse.input": text if isinstance(text, str) else dump(text),
    }


def _embedding_response(call: ModelCall, response: Any) -> None:
    usage = getattr(response, "usage", None)
    call.set(
        {
            "gen_ai.response.model": getattr(response, "model", None),
            "gen_ai.usage.input_tokens": getattr(usage, "prompt_tokens", None),
            "pilothouse.output": f"{len(getattr(response, 'data', []) or [])} embeddings",
        }
    )


def _embedding_wrapper(original: Any) -> Any:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = ModelCall(f"embeddings {kwargs.get('model', '')}".strip(), _embedding_request(kwargs))
        try:
            response = original(self, *args, **call.with_trace_headers(kwargs))
        except BaseException as exc:
            call.fail(exc)
            raise
        record_answer(call, _embedding_response, response)
        return response

    return create


def _async_embedding_wrapper(original: Any) -> Any:
    @functools.wraps(original)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = ModelCall(f"embeddings {kwargs.get('model', '')}".strip(), _embedding_request(kwargs))
        try:
            response = await original(self, *args, **call.with_trace_headers(kwargs))
        except BaseException as exc:
            call.fail(exc)
            raise
        await record_answer_async(call, _embedding_response, response)
        return response

    return create


def instrument_openai() -> None:
    """Trace every ``openai`` chat completion and embedding call (sync and async, streams included)."""
    try:
        from openai.resources import embeddings
        from openai.resources.chat import completions
    except ImportError:
        raise ImportError("instrument_openai() needs the openai package: pip install openai") from None
    patch(completions.Completions, "create", _chat_wrapper, _patched)
    patch(completions.AsyncCompletions, "create", _async_chat_wrapper, _patched)
    patch(embeddings.Embeddings, "create", _embedding_wrapper, _patched)
    patch(embeddings.AsyncEmbeddings, "create", _async_embedding_wrapper, _patched)


def uninstrument_openai() -> None:
    """Undo :func:`instrument_openai`."""
    unpatch(_patched)
