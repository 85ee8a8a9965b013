"""What each provider cannot honour: request parameters it would otherwise ignore without a word (a
200 with something missing is the worst kind of failure). The router refuses such a request with a
400 naming the parameter, unless the deployment (option ``drop_params: true``) or the request
(``"drop_params": true``) opts into dropping it; the trace then records what was dropped.

A registry per provider and operation: ``{provider: {parameter: test}}``, the test telling whether
the request uses the parameter in a way the provider cannot honour."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Test = Callable[[Mapping[str, Any]], bool]

DROP_PARAMS = "drop_params"  # the request's and the deployment option's name (LiteLLM's)
IMAGES = "messages[].content (image_url parts)"  # how the refusal names images sent to a text model


def _used(name: str) -> Test:
    return lambda request: request.get(name) not in (None, False, 0, {}, [])


def _n(request: Mapping[str, Any]) -> bool:
    n = request.get("n")
    return isinstance(n, int) and n > 1


def _images(request: Mapping[str, Any]) -> bool:
    for message in request.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type") == "image_url" for part in content
        ):
            return True
    return False


def _serial_tools(request: Mapping[str, Any]) -> bool:
    return request.get("parallel_tool_calls") is False and bool(request.get("tools"))


def _json_object(request: Mapping[str, Any]) -> bool:
    fmt = request.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") == "json_object"


_ANTHROPIC: dict[str, Test] = {  # parallel_tool_calls=false is honoured (disable_parallel_tool_use)
    "n": _n,
    "logprobs": _used("logprobs"),
    "top_logprobs": _used("top_logprobs"),
    "response_format": _json_object,  # json_schema becomes output_config.format (structured outputs)
    "frequency_penalty": _used("frequency_penalty"),
    "presence_penalty": _used("presence_penalty"),
    "logit_bias": _used("logit_bias"),
    "seed": lambda request: request.get("seed") is not None,
}
# The local provider honours n (1 to 8, by repeated sampling) and response_format (JSON mode, by
# constrained decoding) itself, and refuses what it cannot do of them (n > 8, a schema keyword it
# cannot enforce) with its own 400.
_LOCAL: dict[str, Test] = {
    "logprobs": _used("logprobs"),
    "reasoning_effort": _used("reasoning_effort"),  # SmolLM2 does not reason
    "top_logprobs": _used("top_logprobs"),
    "parallel_tool_calls": _serial_tools,
    "frequency_penalty": _used("frequency_penalty"),
    "presence_penalty": _used("presence_penalty"),
    "logit_bias": _used("logit_bias"),
    IMAGES: _images,
}

UNHONOURED: dict[str, dict[str, dict[str, Test]]] = {
    "chat": {"anthropic": _ANTHROPIC, "local": _LOCAL},
    "embeddings": {"local": {"dimensions": lambda request: request.get("dimensions") is not None}},
}
"""operation -> provider -> parameter -> whether the request uses it in a way the provider cannot honour."""


def unhonoured(operation: str, provider: str, request: Mapping[str, Any]) -> list[str]:
    """The parameters of ``request`` that ``provider`` cannot honour, in the registry's order."""
    tests = UNHONOURED.get(operation, {}).get(provider, {})
    return [name for name, test in tests.items() if test(request)]


_TRANSLATING = ("openai", "local")  # providers that get an Anthropic request translated to OpenAI's shape
_ANTHROPIC_NAME = {"reasoning_effort": "thinking", "top_k": "top_k"}  # translation -> what the client sent


def unhonoured_native(body: Mapping[str, Any], provider: str, names: list[str]) -> list[str]:
    """How a refusal names what an Anthropic Messages ``body`` asked for, translated for ``provider``:
    ``names`` (:func:`unhonoured` of the translation) by the client's own parameter (``thinking`` for
    the ``reasoning_effort`` it became), then what the OpenAI shape has no place for
    (``cache_control``: prompt caching, which OpenAI-style servers do by themselves or not at all)."""
    shown = [_ANTHROPIC_NAME[n] if _ANTHROPIC_NAME.get(n) in body else n for n in names]
    if provider in _TRANSLATING and _has_cache_control(body):
        shown.append("cache_control")
    return shown


def _has_cache_control(body: Mapping[str, Any]) -> bool:
    """Whether any system block, message content block or tool of ``body`` carries ``cache_control``."""
    system = body.get("system")
    places: list[Any] = [*(system if isinstance(system, list) else []), *(body.get("tools") or [])]
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            places += content
    return any(isinstance(p, dict) and p.get("cache_control") is not None for p in places)


def without(request: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """``request`` without ``drop_params`` and the parameters ``names`` (images: the image parts)."""
    out = {k: v for k, v in request.items() if k not in names and k != DROP_PARAMS}
    if IMAGES in names:
        out["messages"] = [_text_only(m) for m in request.get("messages") or []]
    return out


def _text_only(message: Any) -> Any:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return message
    return {
        **message,
        "content": [p for p in content if not (isinstance(p, dict) and p.get("type") == "image_url")],
    }
