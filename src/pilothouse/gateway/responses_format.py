"""OpenAI's Responses API as a translation to and from the gateway's chat call: a request
(``input`` as text or items, ``instructions``, function tools and their call/output items, ``text``
formats, ``reasoning``) becomes an OpenAI chat request any provider serves, and a chat completion
becomes a Response object (output items, usage with its details). Pure: no I/O, no clock."""

from __future__ import annotations

from typing import Any

from pilothouse.gateway.validation import InvalidRequest, check_known_parameters

RESPONSES_PARAMETERS = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
        "max_output_tokens", "max_tool_calls", "temperature", "top_p", "top_logprobs", "text", "reasoning",
        "metadata", "user", "store", "stream", "stream_options", "previous_response_id", "include",
        "truncation", "service_tier", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
        "background", "conversation", "prompt",
        "drop_params",  # the gateway's own, as on chat completions (providers/capabilities.py)
    }
)  # fmt: skip
"""The top-level parameters of OpenAI's ``POST /v1/responses`` (any other is a 400)."""

_PASSED = (
    "temperature", "top_p", "parallel_tool_calls", "user", "service_tier", "safety_identifier",
    "prompt_cache_key", "top_logprobs", "drop_params",
)  # fmt: skip
_ROLES = {"user", "system", "developer", "assistant"}
_MAX_ITEMS = 10_000


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(400, message, param)


def check_responses_request(body: Any) -> dict[str, Any]:
    """The body, if it is a Responses request this gateway can serve; :class:`InvalidRequest`
    (400, naming the parameter) otherwise, including for features it does not offer (background
    runs, stored prompts and conversations, built-in tools)."""
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", "body")
    check_known_parameters(body, RESPONSES_PARAMETERS)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("Missing required parameter: 'model' (a non-empty string).", "model")
    for name in ("background", "conversation", "prompt"):
        if body.get(name):
            raise _bad(f"'{name}' is not supported by this gateway.", name)
    value = body.get("input")
    if value is None and body.get("previous_response_id") is None:
        raise _bad("Missing required parameter: 'input'.", "input")
    if value is not None and not isinstance(value, str | list):
        raise _bad("'input' must be a string or an array of input items.", "input")
    if isinstance(value, list) and len(value) > _MAX_ITEMS:
        raise _bad(f"'input' has more than {_MAX_ITEMS} items.", "input")
    for name in ("instructions", "previous_response_id"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _bad(f"'{name}' must be a string.", name)
    for name in ("stream", "store"):
        if name in body and not isinstance(body[name], bool):
            raise _bad(f"'{name}' must be true or false.", name)
    cap = body.get("max_output_tokens")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 10_000_000):
        raise _bad("'max_output_tokens' must be an integer from 1 to 10000000.", "max_output_tokens")
    for name in ("text", "reasoning", "metadata", "stream_options"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _bad(f"'{name}' must be an object.", name)
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise _bad("'tools' must be an array of tool objects.", "tools")
    return body


def _text_of(content: Any, where: str) -> str:
    """The text of a function call's output (a string, or input_text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    raise _bad(f"{where} must be a string or an array of content parts.", where)


def _part(part: Any, where: str) -> dict[str, Any]:
    """One content part of an input message, as a chat content part."""
    if not isinstance(part, dict):
        raise _bad(f"{where} must be an object.", where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: dict[str, Any] = {"url": part["image_url"]}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise _bad(f"{where}: content part type {str(kind)[:64]!r} is not supported by this gateway.", where)


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise _bad(f"{where}.role must be one of {', '.join(sorted(_ROLES))}.", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or an array of content parts.", f"{where}.content")
    parts = [_part(p, f"{where}.content[{i}]") for i, p in enumerate(content)]
    if role == "user" and any(p["type"] != "text" for p in parts):
        return {"role": role, "content": parts}
    return {"role": role, "content": "".join(p["text"] for p in parts if p["type"] == "text")}


def input_messages(value: Any) -> list[dict[str, Any]]:
    """Chat messages of a Responses ``input`` (text, or messages and function call/output items);
    consecutive function calls become one assistant message with several tool calls."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise _bad(f"{where} must be an object.", where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
                raise _bad(f"{where} needs a call_id and a name (strings).", where)
            arguments = item.get("arguments", "")
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {
                    "name": item["name"],
                    "arguments": arguments if isinstance(arguments, str) else "",
                },
            }
            last = messages[-1] if messages else None
            if (
                last is not None
                and last["role"] == "assistant"
                and isinstance(last.get("content"), str | None)
            ):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _bad(f"{where}.call_id must be a string.", f"{where}.call_id")
            output = _text_of(item.get("output", ""), f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
        elif kind == "reasoning":
            continue  # a model's own reasoning, not replayed to another provider
        else:
            raise _bad(f"{where}: item type {str(kind)[:64]!r} is not supported by this gateway.", where)
    return messages


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    chat_tools = []
    for index, tool in enumerate(tools):
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            kind = str(tool.get("type"))[:64]
            raise _bad(
                f"tools[{index}]: only function tools are supported by this gateway (got {kind!r}).", "tools"
            )
        function = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object"}}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if choice in ("auto", "none", "required"):
        return choice
    raise _bad(
        "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}.",
        "tool_choice",
    )


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    form = text.get("format")
    if not isinstance(form, dict) or form.get("type") in (None, "text"):
        return None
    if form.get("type") == "json_object":
        return {"type": "json_object"}
    if form.get("type") == "json_schema" and isinstance(form.get("schema"), dict):
        schema = {k: form[k] for k in ("name", "schema", "strict", "description") if k in form}
        schema.setdefault("name", "response")
        return {"type": "json_schema", "json_schema": schema}
    raise _bad("'text.format' must be text, json_object or json_schema (with a schema).", "text.format")


def chat_request(body: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat request of a checked Responses request, after ``history`` (the conversation of its
    ``previous_response_id``, whose instructions are not carried over, as OpenAI does)."""
    messages = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    messages += history + input_messages(body.get("input"))
    if not messages:
        raise _bad("The request has no input.", "input")
    request: dict[str, Any] = {"model": body["model"], "messages": messages}
    for name in _PASSED:
        if body.get(name) is not None:
            request[name] = body[name]
    if body.get("max_output_tokens") is not None:
        request["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        request["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        request["tool_choice"] = _tool_choice(body["tool_choice"])
    if isinstance(body.get("text"), dict) and (form := _response_format(body["text"])) is not None:
        request["response_format"] = form
    effort = (body.get("reasoning") or {}).get("effort")
    if isinstance(effort, str):
        request["reasoning_effort"] = effort
    if body.get("stream"):
        request["stream"] = True
    return request


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """A chat completion's usage in the Responses API's shape."""
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_shell(body: dict[str, Any], response_id: str, created: int, status: str) -> dict[str, Any]:
    """A Response object without output: what the request asked for, echoed as OpenAI does."""
    tools = body.get("tools") or []
    text = body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "service_tier": body.get("service_tier"),
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": text,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def finish(response: dict[str, Any], finish_reason: Any, usage: Any) -> dict[str, Any]:
    """``response`` completed (or incomplete, when the output was cut), with its usage."""
    reason = _INCOMPLETE.get(str(finish_reason))
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = responses_usage(usage)
    return response


def output_items(message: dict[str, Any], item_id: str) -> list[dict[str, Any]]:
    """The output items of a chat completion's message: reasoning (when the provider returned it),
    the message (text or refusal), then one function call per tool call."""
    items: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        summary = [{"type": "summary_text", "text": reasoning}]
        items.append({"type": "reasoning", "id": f"rs_{item_id}", "summary": summary})
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append(output_text(message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append({"type": "refusal", "refusal": message["refusal"]})
    if content:
        items.append(
            {
                "type": "message",
                "id": f"msg_{item_id}",
                "status": "completed",
                "role": "assistant",
                "content": content,
            }
        )
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        items.append(
            function_call(f"fc_{item_id}_{index}", call.get("id") or f"call_{item_id}_{index}", function)
        )
    return items


def output_text(text: str) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call(
    item_id: str, call_id: str, function: dict[str, Any], status: str = "completed"
) -> dict[str, Any]:
    """A ``function_call`` output item."""
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": str(function.get("name") or ""),
        "arguments": str(function.get("arguments") or ""),
        "status": status,
    }


def chat_to_response(
    chat: dict[str, Any], body: dict[str, Any], response_id: str, created: int
) -> dict[str, Any]:
    """The Response object of a (non-streamed) chat completion."""
    choice = (chat.get("choices") or [{}])[0]
    response = response_shell(body, response_id, created, "completed")
    response["output"] = output_items(choice.get("message") or {}, response_id.removeprefix("resp_"))
    return finish(response, choice.get("finish_reason"), chat.get("usage"))


def output_messages(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages of a Response's output (for the next turn of ``previous_response_id``)."""
    return input_messages([item for item in response.get("output") or [] if item.get("type") != "reasoning"])


def input_items(value: Any, base: str) -> list[dict[str, Any]]:
    """A checked request's ``input`` as the items ``GET /v1/responses/{id}/input_items`` lists: text
    as a user message, message contents as parts, every item with an id."""
    items = [{"role": "user", "content": value}] if isinstance(value, str) else list(value or [])
    listed = []
    for index, original in enumerate(items):
        item: dict[str, Any] = dict(original)
        kind = item.setdefault("type", "message")
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}.get(kind, "item")
        item.setdefault("id", f"{prefix}_{base}_in{index}")
        item.setdefault("status", "completed")
        listed.append(item)
    return listed
