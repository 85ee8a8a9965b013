"""Checking an upstream's answer before anything of ours reads it: a 200 whose JSON is not a chat
completion (or embeddings response, or stream chunk) is the upstream's fault, answered 502
``upstream_unreadable`` (retryable, like a body that is not JSON), never our 500."""

from __future__ import annotations

from typing import Any

from pilothouse.providers.base import UNREADABLE, ProviderError


def _unreadable(what: str) -> ProviderError:
    return ProviderError(
        502,
        f"The upstream's answer could not be read: {what}.",
        kind="server_error",
        code=UNREADABLE,
        retryable=True,
    )


def _check_usage(usage: Any) -> None:
    if usage is not None and not isinstance(usage, dict):
        raise _unreadable("'usage' is not an object")


def check_chat_answer(response: Any) -> dict[str, Any]:
    """``response`` if it has a chat completion's shape (an object whose ``choices`` are objects with
    a ``message`` object, content text, parts or null, ``tool_calls`` an array of objects); raises a
    502 :class:`ProviderError` otherwise."""
    if not isinstance(response, dict):
        raise _unreadable("it is not a JSON object")
    choices = response.get("choices")
    if not isinstance(choices, list):
        raise _unreadable("'choices' is not an array")
    for choice in choices:
        if not isinstance(choice, dict):
            raise _unreadable("a choice is not an object")
        message = choice.get("message")
        if message is None:
            continue
        if not isinstance(message, dict):
            raise _unreadable("a choice's 'message' is not an object")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _unreadable("a message's 'content' is neither text nor an array")
        calls = message.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list)
            and all(isinstance(c, dict) and isinstance(c.get("function") or {}, dict) for c in calls)
        ):
            raise _unreadable("a message's 'tool_calls' is not an array of tool calls")
    if not isinstance(response.get("model"), str | None):
        raise _unreadable("'model' is not text")
    _check_usage(response.get("usage"))
    return response


def check_embeddings_answer(response: Any) -> dict[str, Any]:
    """``response`` if it has an embeddings response's shape; raises a 502 :class:`ProviderError`."""
    if not isinstance(response, dict):
        raise _unreadable("it is not a JSON object")
    data = response.get("data")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise _unreadable("'data' is not an array of objects")
    _check_usage(response.get("usage"))
    return response


def check_chunk(chunk: Any) -> dict[str, Any]:
    """A stream chunk if it has a ``chat.completion.chunk``'s shape; raises a 502 :class:`ProviderError`."""
    if not isinstance(chunk, dict):
        raise _unreadable("a stream chunk is not a JSON object")
    choices = chunk.get("choices")
    if choices is not None and not (
        isinstance(choices, list)
        and all(
            isinstance(c, dict)
            and isinstance(c.get("delta") or {}, dict)
            and isinstance((c.get("delta") or {}).get("content") or "", str)
            and isinstance((c.get("delta") or {}).get("tool_calls") or [], list)
            and isinstance(c.get("index", 0), int)
            for c in choices
        )
    ):
        raise _unreadable("a stream chunk's 'choices' are not chunk choices")
    if not isinstance(chunk.get("model"), str | None):
        raise _unreadable("a stream chunk's 'model' is not text")
    _check_usage(chunk.get("usage"))
    return chunk
