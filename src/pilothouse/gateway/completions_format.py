"""OpenAI's legacy ``POST /v1/completions`` as a translation to and from the gateway's chat call: the
prompt becomes one user message, each chat choice (or chunk) a ``text_completion`` choice. What a chat
model cannot do (``echo``, ``suffix``, ``best_of``, ``logprobs``, token-id prompts) is a 400 naming
the parameter. Pure."""

from __future__ import annotations

from typing import Any

from pilothouse.gateway.validation import InvalidRequest, check_known_parameters

COMPLETIONS_PARAMETERS = frozenset(
    {
        "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop",
        "presence_penalty", "frequency_penalty", "logit_bias", "user", "seed", "echo", "suffix",
        "logprobs", "best_of",
        "drop_params",  # the gateway's own, as on chat completions (providers/capabilities.py)
    }
)  # fmt: skip
_PASSED = (
    "model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop",
    "presence_penalty", "frequency_penalty", "logit_bias", "user", "seed", "drop_params",
)  # fmt: skip
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this API


def completions_to_chat(body: Any) -> dict[str, Any]:
    """The chat request of a legacy completions request; :class:`InvalidRequest` (400) otherwise.
    The chat checks (ranges, types) run on the result."""
    if not isinstance(body, dict):
        raise InvalidRequest(400, "The request body must be a JSON object.")
    check_known_parameters(body, COMPLETIONS_PARAMETERS)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest(
            400,
            "'prompt' must be a string (or an array of one string); token ids are not supported.",
            "prompt",
        )
    if body.get("echo"):
        raise InvalidRequest(400, "'echo' is not supported by this gateway.", "echo")
    if body.get("suffix"):
        raise InvalidRequest(400, "'suffix' is not supported by this gateway.", "suffix")
    if body.get("logprobs") is not None:
        raise InvalidRequest(400, "'logprobs' is not supported by this gateway.", "logprobs")
    if body.get("best_of") not in (None, 1):
        raise InvalidRequest(400, "'best_of' is not supported by this gateway.", "best_of")
    request: dict[str, Any] = {name: body[name] for name in _PASSED if body.get(name) is not None}
    request["messages"] = [{"role": "user", "content": prompt}]
    request.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    return request


def _choice(choice: dict[str, Any], text: Any) -> dict[str, Any]:
    return {
        "text": text if isinstance(text, str) else "",
        "index": choice.get("index", 0),
        "logprobs": None,
        "finish_reason": choice.get("finish_reason"),
    }


def chat_to_completion(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """A ``text_completion`` of a chat completion (``model``: the name the client asked for)."""
    return {
        "id": "cmpl-" + str(chat.get("id") or "").removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": chat.get("created", 0),
        "model": model,
        "choices": [_choice(c, (c.get("message") or {}).get("content")) for c in chat.get("choices") or []],
        "usage": chat.get("usage"),
    }


def chunk_to_completion(chunk: dict[str, Any], model: str) -> dict[str, Any]:
    """A streamed ``text_completion`` chunk of a chat chunk (the usage chunk keeps its usage)."""
    completion = {
        "id": "cmpl-" + str(chunk.get("id") or "").removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": chunk.get("created", 0),
        "model": model,
        "choices": [_choice(c, (c.get("delta") or {}).get("content")) for c in chunk.get("choices") or []],
    }
    if chunk.get("usage"):
        completion["usage"] = chunk["usage"]
    return completion
