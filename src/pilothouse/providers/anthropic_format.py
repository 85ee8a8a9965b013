"""Translation between the Anthropic Messages API and OpenAI chat completions, both ways, for
requests, responses and streams. Pure functions and small stateful stream converters."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from pilothouse.domain.traces import token_count
from pilothouse.providers.anthropic_blocks import anthropic_blocks, openai_content, openai_parts

_STOP_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_STOP_TO_OPENAI = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _json_value(text: Any) -> Any:
    if not isinstance(text, str):
        return text if text is not None else {}
    try:
        return orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {"_raw": text}


# -- Anthropic request -> OpenAI request (the gateway's /v1/messages over any provider) ------------


def messages_to_openai_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request equivalent to an Anthropic Messages request."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        system_parts = openai_parts(system) if isinstance(system, list) else system
        messages.append({"role": "system", "content": openai_content(system_parts)})
    for message in body.get("messages") or []:
        role, content = message.get("role"), message.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        blocks = content if isinstance(content, list) else []
        parts = openai_parts(blocks)
        tool_uses = [b for b in blocks if b.get("type") == "tool_use"]
        for result in (b for b in blocks if b.get("type") == "tool_result"):
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": result.get("tool_use_id"),
                    "content": _text_of(result.get("content")),
                }
            )
        if parts or tool_uses:
            out: dict[str, Any] = {"role": role, "content": openai_content(parts)}
            if tool_uses:
                out["tool_calls"] = [
                    {
                        "id": b.get("id"),
                        "type": "function",
                        "function": {"name": b.get("name"), "arguments": _json_text(b.get("input", {}))},
                    }
                    for b in tool_uses
                ]
            messages.append(out)
    request: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        request["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p", "stream"):
        if key in body:
            request[key] = body[key]
    if body.get("stop_sequences"):
        request["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        request["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object"},
                },
            }
            for t in body["tools"]
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "any":
            request["tool_choice"] = "required"
        elif kind == "tool":
            request["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in ("auto", "none"):
            request["tool_choice"] = kind
        if choice.get("disable_parallel_tool_use") is True and body.get("tools"):
            request["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        request["user"] = user
    if body.get("top_k") is not None:  # OpenAI-compatible servers (vLLM, llama.cpp) and the local model
        request["top_k"] = body["top_k"]
    effort = reasoning_effort(body.get("thinking"))
    if effort is not None:
        request["reasoning_effort"] = effort
    fmt = (
        (body.get("output_config") or {}).get("format")
        if isinstance(body.get("output_config"), dict)
        else None
    )
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":  # structured outputs
        schema = {"name": "output", "schema": fmt.get("schema") or {}, "strict": True}
        request["response_format"] = {"type": "json_schema", "json_schema": schema}
    if body.get("drop_params") is True:  # the gateway's own (providers/capabilities.py)
        request["drop_params"] = True
    return request


def reasoning_effort(thinking: Any) -> str | None:
    """OpenAI's ``reasoning_effort`` for Anthropic's ``thinking``: by the budget (LiteLLM's scale the
    other way: low 1024, medium 2048, high 4096 tokens); ``adaptive`` is medium; None when off."""
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return None
    budget = thinking.get("budget_tokens")
    if thinking.get("type") == "adaptive" or not isinstance(budget, int) or isinstance(budget, bool):
        return "medium"
    return "low" if budget < 2048 else "medium" if budget < 4096 else "high"


def openai_to_messages_response(response: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic ``message`` for an OpenAI chat completion (first choice)."""
    choice = (response.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:16]}",
                "name": function.get("name"),
                "input": _json_value(function.get("arguments")),
            }
        )
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_TO_ANTHROPIC.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(response.get("usage")),
    }


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """Anthropic usage (input excludes cache reads) from OpenAI usage (prompt tokens include them)."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached = token_count(details.get("cached_tokens"))[0]
    written = token_count(details.get("cache_write_tokens"))[0]
    return {
        "input_tokens": max(0, token_count(usage.get("prompt_tokens"))[0] - cached - written),
        "output_tokens": token_count(usage.get("completion_tokens"))[0],
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    }


class MessagesStreamEncoder:
    """Turns OpenAI ``chat.completion.chunk`` dicts into Anthropic stream events (name, payload)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.block: int | None = None  # index of the open content block
        self.block_kind: str | None = None
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool call index -> block index
        self.next_block = 0
        self.stop_reason = "end_turn"
        self.usage: dict[str, Any] | None = None

    def _start(self) -> list[tuple[str, dict[str, Any]]]:
        self.started = True
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close_block(self) -> list[tuple[str, dict[str, Any]]]:
        if self.block is None:
            return []
        index, self.block, self.block_kind = self.block, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = self._close_block()
        self.block, self.block_kind = self.next_block, kind
        self.next_block += 1
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self.block, "content_block": block},
            )
        )
        return events

    def feed(self, chunk: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Events for one chunk."""
        events = [] if self.started else self._start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in (chunk.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.block_kind != "text":
                    events += self._open_block("text", {"type": "text", "text": ""})
                events.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self.block,
                            "delta": {"type": "text_delta", "text": delta["content"]},
                        },
                    )
                )
            for call in delta.get("tool_calls") or []:
                index = int(call.get("index", 0))
                function = call.get("function") or {}
                if index not in self.tool_blocks:
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:16]}",
                        "name": function.get("name") or "",
                        "input": {},
                    }
                    events += self._open_block("tool_use", block)
                    assert self.block is not None
                    self.tool_blocks[index] = self.block
                if function.get("arguments"):
                    events.append(
                        (
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": self.tool_blocks[index],
                                "delta": {"type": "input_json_delta", "partial_json": function["arguments"]},
                            },
                        )
                    )
            if choice.get("finish_reason"):
                self.stop_reason = _STOP_TO_ANTHROPIC.get(choice["finish_reason"], "end_turn")
        return events

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        """The closing events."""
        events = [] if self.started else self._start()
        events += self._close_block()
        usage = anthropic_usage(self.usage)
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events


# -- OpenAI request -> Anthropic request (the anthropic provider) ---------------------------------


def openai_to_messages_request(request: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic Messages request equivalent to an OpenAI chat request."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in request.get("messages") or []:
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):  # each text part its own line
            system.extend(b["text"] for b in anthropic_blocks(content) if b["type"] == "text")
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _text_of(content),
            }
            if messages and messages[-1]["role"] == "user" and isinstance(messages[-1]["content"], list):
                messages[-1]["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block]})
        else:
            blocks: list[dict[str, Any]] = anthropic_blocks(content)
            text = _text_of(content)
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": _json_value(function.get("arguments")),
                    }
                )
            messages.append(
                {"role": "assistant" if role == "assistant" else "user", "content": blocks or text}
            )
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": request.get("max_completion_tokens") or request.get("max_tokens") or 4096,
    }
    if system:
        out["system"] = "\n".join(system)
    for key in ("temperature", "top_p", "stream"):
        if key in request:
            out[key] = request[key]
    stop = request.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if request.get("tools"):
        out["tools"] = [
            {
                "name": (t.get("function") or {}).get("name"),
                "description": (t.get("function") or {}).get("description", ""),
                "input_schema": (t.get("function") or {}).get("parameters") or {"type": "object"},
            }
            for t in request["tools"]
        ]
    choice = request.get("tool_choice")
    if choice == "required":
        out["tool_choice"] = {"type": "any"}
    elif choice in ("auto", "none"):
        out["tool_choice"] = {"type": choice}
    elif isinstance(choice, dict):
        out["tool_choice"] = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    if request.get("parallel_tool_calls") is False and request.get("tools"):
        out["tool_choice"] = {**out.get("tool_choice", {"type": "auto"}), "disable_parallel_tool_use": True}
    if request.get("user"):
        out["metadata"] = {"user_id": request["user"]}
    if request.get("top_k") is not None:
        out["top_k"] = request["top_k"]
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":  # Anthropic's structured outputs
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    budget = _THINKING_BUDGET.get(str(request.get("reasoning_effort")))
    if budget is not None:  # thinking needs max_tokens above its budget
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        out["max_tokens"] = max(int(out["max_tokens"]), budget + 1024)
    return out


_THINKING_BUDGET = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192}
"""Anthropic's thinking budget for OpenAI's ``reasoning_effort`` (LiteLLM's scale; ``none``: no thinking)."""


def openai_usage_from_anthropic(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage (prompt tokens include cache reads and writes) from Anthropic usage."""
    read = int(usage.get("cache_read_input_tokens") or 0)
    write = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + read + write
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": write},
    }


def messages_to_openai_response(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion for an Anthropic ``message``."""
    blocks = message.get("content") or []
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    tool_calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": _json_text(b.get("input", {}))},
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    reply: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return {
        "id": message.get("id") or f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": _STOP_TO_OPENAI.get(str(message.get("stop_reason")), "stop"),
            }
        ],
        "usage": openai_usage_from_anthropic(message.get("usage") or {}),
    }


class ChunkDecoder:
    """Turns Anthropic stream events into OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        self.model: str | None = None
        self.usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}

    def empty_chunk(self) -> dict[str, Any]:
        """A chunk with no choices (a carrier for an event that has no OpenAI view)."""
        return {**self._chunk({}), "choices": []}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Chunks for one event (the final one carries usage, as ``include_usage`` asks)."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.model = message.get("model")
            self.usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tool_index.setdefault(int(event.get("index", 0)), len(self.tool_index))
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self.tool_index.get(int(event.get("index", 0)), 0)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            stop = (event.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, _STOP_TO_OPENAI.get(str(stop), "stop"))]
        if kind == "message_stop":
            return [{**self._chunk({}), "choices": [], "usage": openai_usage_from_anthropic(self.usage)}]
        return []
