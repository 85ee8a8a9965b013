"""Checking an OpenAI-style request before any upstream sees it: the same mistakes get the same
answers OpenAI would give (400 `invalid_request_error` for a missing field, a value of the wrong type or
range, and a parameter the API does not have)."""

from __future__ import annotations

from typing import Any, cast

from pilothouse.domain.chat_parameters import CHAT_PARAMETERS, INTEGER_RANGES, NUMBER_RANGES, number_problem


class InvalidRequest(ValueError):
    """A request the gateway refuses; ``param`` names the offending field."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}

EMBEDDINGS_PARAMETERS = frozenset({"model", "input", "encoding_format", "dimensions", "user", "drop_params"})
"""The top-level parameters of OpenAI's embeddings API."""


def check_known_parameters(body: dict[str, Any], known: frozenset[str]) -> None:
    """A 400 naming the first parameter of ``body`` that is not in ``known`` (OpenAI's wording)."""
    for name in body:
        if name not in known:
            shown = name if len(name) <= 64 else name[:64] + "..."
            raise InvalidRequest(400, f"Unrecognized request argument supplied: {shown}", shown)


def _check_model(body: Any) -> None:
    if not isinstance(body, dict):
        raise InvalidRequest(400, "The request body must be a JSON object.")
    model = body.get("model")
    if model is None:
        raise InvalidRequest(400, "You must provide a model parameter.", "model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(400, "'model' must be a non-empty string.", "model")


def _check_message(message: dict[str, Any], index: int) -> None:
    """A message's content is text, null or an array of content parts; its tool calls, objects with a
    ``function`` object (what every provider adapter may read)."""
    content = message.get("content")
    if not (
        content is None
        or isinstance(content, str)
        or (isinstance(content, list) and all(isinstance(part, dict) for part in content))
    ):
        raise InvalidRequest(
            400,
            f"messages[{index}].content must be a string or an array of content parts.",
            f"messages[{index}]",
        )
    calls = message.get("tool_calls")
    if calls is not None and not (
        isinstance(calls, list)
        and all(isinstance(c, dict) and isinstance(c.get("function", {}), dict) for c in calls)
    ):
        raise InvalidRequest(
            400,
            f"messages[{index}].tool_calls must be an array of objects with a 'function' object.",
            f"messages[{index}].tool_calls",
        )


def check_chat_request(body: Any) -> dict[str, Any]:
    """The body, if it is a valid chat completion request; raises :class:`InvalidRequest` otherwise."""
    _check_model(body)
    check_known_parameters(body, CHAT_PARAMETERS)
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(400, "Missing required parameter: 'messages'.", "messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(400, "'messages' must be a non-empty array.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise InvalidRequest(
                400,
                f"messages[{index}] must be an object with a role ({', '.join(sorted(_ROLES))}).",
                f"messages[{index}].role",
            )
        _check_message(message, index)
    for name in (*NUMBER_RANGES, *INTEGER_RANGES):
        problem = number_problem(name, body.get(name))
        if problem is not None:
            raise InvalidRequest(400, problem, name)
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequest(400, "'stream' must be true or false.", "stream")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4)
    ):
        raise InvalidRequest(400, "'stop' must be a string or an array of up to 4 strings.", "stop")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise InvalidRequest(400, "'tools' must be an array of tool objects.", "tools")
    _check_tool_choice(body.get("tool_choice"))
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest(400, "'stream_options' must be an object.", "stream_options")
    return cast(dict[str, Any], body)


_TOOL_CHOICES = ("none", "auto", "required")


def _check_tool_choice(choice: Any) -> None:
    """``tool_choice``: absent, ``none``/``auto``/``required``, or an object with a ``type`` (a
    ``function`` one names its function). Anything else is a 400, before any budget is held."""
    if choice is None or choice in _TOOL_CHOICES:
        return
    if isinstance(choice, dict) and isinstance(choice.get("type"), str):
        if choice["type"] != "function":
            return
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str) and function["name"]:
            return
    raise InvalidRequest(
        400,
        "'tool_choice' must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": "..."}}.',
        "tool_choice",
    )


def check_embeddings_request(body: Any) -> dict[str, Any]:
    """The body, if it is a valid embeddings request; raises :class:`InvalidRequest` otherwise."""
    _check_model(body)
    check_known_parameters(body, EMBEDDINGS_PARAMETERS)
    value = body.get("input")
    if value is None:
        raise InvalidRequest(400, "Missing required parameter: 'input'.", "input")
    if not (isinstance(value, str) or (isinstance(value, list) and value)):
        raise InvalidRequest(400, "'input' must be a string or a non-empty array.", "input")
    return cast(dict[str, Any], body)


def check_messages_request(body: Any) -> dict[str, Any]:
    """The body, if it is a valid Anthropic Messages request; raises :class:`InvalidRequest` otherwise."""
    _check_model(body)
    if body.get("max_tokens") is None:
        raise InvalidRequest(400, "max_tokens: Field required", "max_tokens")
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest(400, "max_tokens: must be a positive integer", "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(400, "messages: must be a non-empty list", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(
                400, f"messages.{index}.role: must be 'user' or 'assistant'", f"messages.{index}.role"
            )
        if not isinstance(message.get("content"), str | list):
            raise InvalidRequest(
                400, f"messages.{index}.content: must be a string or a list of blocks", f"messages.{index}"
            )
        if isinstance(message["content"], list):
            _check_blocks(message["content"], f"messages.{index}.content")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 1
    ):
        raise InvalidRequest(400, "temperature: must be a number from 0 to 1", "temperature")
    _check_messages_options(body)
    return cast(dict[str, Any], body)


_BLOCK_TYPES = {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
_ANTHROPIC_TOOL_CHOICES = {"auto", "any", "tool", "none"}


def _check_blocks(blocks: list[Any], where: str, *, text_only: bool = False) -> None:
    """Content blocks of an Anthropic message (or its ``system``): objects with a known ``type`` and
    the fields the translation reads of the right types (400 otherwise, as Anthropic answers)."""
    for index, block in enumerate(blocks):
        at = f"{where}.{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(400, f"{at}: must be a content block object with a 'type'", at)
        kind = block["type"]
        if kind not in _BLOCK_TYPES or (text_only and kind != "text"):
            allowed = "text" if text_only else ", ".join(sorted(_BLOCK_TYPES))
            raise InvalidRequest(400, f"{at}.type: {kind[:64]!r} is not one of {allowed}", f"{at}.type")
        if kind == "text" and not isinstance(block.get("text"), str):
            raise InvalidRequest(400, f"{at}.text: must be a string", f"{at}.text")
        if kind == "tool_use":
            for name in ("id", "name"):
                if not isinstance(block.get(name), str):
                    raise InvalidRequest(400, f"{at}.{name}: must be a string", f"{at}.{name}")
            if not isinstance(block.get("input", {}), dict):
                raise InvalidRequest(400, f"{at}.input: must be an object", f"{at}.input")
        if kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise InvalidRequest(400, f"{at}.tool_use_id: must be a string", f"{at}.tool_use_id")
            content = block.get("content", "")
            if not isinstance(content, str | list):
                raise InvalidRequest(400, f"{at}.content: must be a string or a list", f"{at}.content")
            if isinstance(content, list):
                _check_blocks(content, f"{at}.content")


def _check_messages_options(body: dict[str, Any]) -> None:
    """``system``, ``tools``, ``tool_choice``, ``metadata``, ``stop_sequences``, ``stream``, ``top_p``."""
    system = body.get("system")
    if system is not None:
        if not isinstance(system, str | list):
            raise InvalidRequest(400, "system: must be a string or a list of text blocks", "system")
        if isinstance(system, list):
            _check_blocks(system, "system", text_only=True)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest(400, "tools: must be a list of tool objects", "tools")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise InvalidRequest(400, f"tools.{index}: must be an object with a 'name'", f"tools.{index}")
            schema = tool.get("input_schema")
            if schema is not None and not isinstance(schema, dict):
                raise InvalidRequest(400, f"tools.{index}.input_schema: must be an object", f"tools.{index}")
            if not isinstance(tool.get("description", ""), str):
                raise InvalidRequest(400, f"tools.{index}.description: must be a string", f"tools.{index}")
    choice = body.get("tool_choice")
    if choice is not None and (
        not isinstance(choice, dict)
        or choice.get("type") not in _ANTHROPIC_TOOL_CHOICES
        or (choice.get("type") == "tool" and not isinstance(choice.get("name"), str))
    ):
        raise InvalidRequest(
            400,
            "tool_choice: must be an object with type auto, any, none or tool (and a name)",
            "tool_choice",
        )
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not isinstance(metadata.get("user_id", ""), str | None)
    ):
        raise InvalidRequest(400, "metadata: must be an object (user_id a string)", "metadata")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(x, str) for x in stops)):
        raise InvalidRequest(400, "stop_sequences: must be a list of strings", "stop_sequences")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequest(400, "stream: must be true or false", "stream")
    top_p = body.get("top_p")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 <= top_p <= 1
    ):
        raise InvalidRequest(400, "top_p: must be a number from 0 to 1", "top_p")
