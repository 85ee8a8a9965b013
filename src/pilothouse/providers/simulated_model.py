"""A deterministic simulated model: the same request always gets the same answer and token counts."""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

WORDS = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "models",
    "answer",
    "questions",
    "about",
    "tokens",
    "latency",
    "cost",
    "traces",
    "and",
    "evaluation",
    "with",
    "care",
)


@dataclass
class SimConfig:
    """How the simulated model behaves. Per request, headers ``x-sim-status`` (answer with that HTTP
    error), ``x-sim-latency-ms`` and ``x-sim-drop-after`` override it; the model name ``fail-model``
    always answers 500.

    ``echo``: answer with the words of the last user message (capped by ``max_tokens``) instead of
    hashed words, so that what a prompt says shows in the answer (evals: a prompt that drops a variable
    scores worse). ``max_concurrency``: more requests than this in flight at once get 429 with
    ``Retry-After: retry_after_s`` (a rate-limited upstream, for back-off tests).

    ``knowledge``: a JSONL file of ``{"question", "answer", "difficulty"}`` (difficulty 0..1); a
    question found in the last user message is answered right when its difficulty is at most
    ``skill``, otherwise with ``"I am not sure."`` (a weak model that knows the easy items: cascade
    routing demos); a question it does not know gets ``"I do not know."``."""

    latency_ms: float = 0.0  # before the first byte
    tokens_per_s: float = 0.0  # 0: all at once
    output_tokens: int = 12  # answer length when max_tokens does not cap it
    cached_fraction: float = 0.0  # share of prompt tokens reported as cached
    cache_write_fraction: float = 0.0  # share written to the cache (Anthropic's cache_creation tokens)
    reasoning_tokens: int = 0
    drop_after_tokens: int | None = None  # cut streams after this many tokens
    retry_after_s: float = 1.0
    echo: bool = False
    max_concurrency: int | None = None
    knowledge: str | None = None
    skill: float = 1.0


def count_tokens(text: str) -> int:
    """Simulated tokenizer: one token per whitespace-separated word (at least one)."""
    return max(1, len(text.split()))


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def prompt_text(messages: list[Any], system: Any = None) -> str:
    """All prompt text of a chat request (OpenAI or Anthropic shape)."""
    parts = [_message_text(system)] if system else []
    parts.extend(_message_text(m.get("content")) for m in messages if isinstance(m, dict))
    return " ".join(p for p in parts if p)


def last_user_text(messages: list[Any]) -> str:
    """The text of the last user message of a chat request ("" when there is none)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message.get("content"))
    return ""


def answer_words(prompt: str, n: int) -> list[str]:
    """``n`` words chosen by a hash of the prompt: deterministic, different per prompt."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return [WORDS[(digest[i % len(digest)] + i) % len(WORDS)] for i in range(n)]


@dataclass
class SimReply:
    """What the simulated model answers."""

    words: list[str]
    prompt_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    finish_reason: str
    tool_call: dict[str, Any] | None = None
    cache_write_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        called = count_tokens(self.tool_call["arguments"]) if self.tool_call else 0
        return len(self.words) + self.reasoning_tokens + called


@functools.lru_cache(maxsize=8)
def _knowledge(path: str) -> tuple[tuple[str, str, float], ...]:
    items = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            item = orjson.loads(line)
            items.append(
                (str(item["question"]).strip().lower(), str(item["answer"]), float(item["difficulty"]))
            )
    return tuple(items)


def knowledge_answer(path: str, question: str, skill: float) -> str:
    """What a simulated model of ``skill`` answers to ``question`` from the knowledge file."""
    asked = question.strip().lower()
    # the longest known question the message contains ("number 12" is not "number 1")
    found = max((k for k in _knowledge(path) if k[0] in asked), key=lambda k: len(k[0]), default=None)
    if found is None:
        return "I do not know."
    _known, answer, difficulty = found
    return answer if difficulty <= skill else "I am not sure."


def _tool_name(tool: Any) -> str:
    if not isinstance(tool, dict):
        return "tool"
    return str((tool.get("function") or {}).get("name") or tool.get("name") or "tool")


def _answers_a_tool_call(messages: list[Any]) -> bool:
    """True when the last message gives a tool's result (OpenAI role ``tool``, or an Anthropic user
    message with a ``tool_result`` block): a model then usually answers in words."""
    last = messages[-1] if messages else None
    if not isinstance(last, dict):
        return False
    content = last.get("content")
    return last.get("role") == "tool" or (
        isinstance(content, list)
        and any(isinstance(part, dict) and part.get("type") == "tool_result" for part in content)
    )


def _tool_to_call(tools: Any, tool_choice: Any, messages: list[Any]) -> dict[str, Any] | None:
    """The tool the model calls, or None to answer in words. ``tool_choice`` as OpenAI ("none",
    "auto", "required", {"type": "function", "function": {"name"}}) or Anthropic ({"type": "none" |
    "auto" | "any" | "tool", "name"}) says it; left to the model, it calls the first tool unless the
    last message already gives a tool's result."""
    if not tools or not isinstance(tools, list):
        return None
    choice = tool_choice.get("type") if isinstance(tool_choice, dict) else tool_choice
    if choice == "none":
        return None
    named = None
    if isinstance(tool_choice, dict):
        named = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    if choice in (None, "auto") and _answers_a_tool_call(messages):
        return None
    chosen: dict[str, Any] = next((t for t in tools if named and _tool_name(t) == named), tools[0])
    return chosen


def _resolve(schema: Any, root: Any) -> Any:
    """``schema`` with a local ``$ref`` (``#/$defs/Name``, as pydantic writes them) followed."""
    for _ in range(8):
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        schema = target
    return schema


def schema_instance(schema: Any, text: str, depth: int = 0, root: Any = None) -> Any:
    """A value that fits a JSON schema (the common keywords): every declared property, enums and
    consts as given, numbers within their bounds, strings filled with ``text``, local ``$ref``
    pointers followed. An object schema without properties gets ``{"query": text}``."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or depth > 8:
        return text
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return schema_instance(options[0], text, depth + 1, root)
    if schema.get("allOf"):
        parts = [schema_instance(part, text, depth + 1, root) for part in schema["allOf"]]
        if all(isinstance(part, dict) for part in parts):
            return {key: value for part in parts for key, value in part.items()}
        return parts[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            return {"query": text}
        return {name: schema_instance(sub, text, depth + 1, root) for name, sub in properties.items()}
    if kind == "array":
        return [schema_instance(schema.get("items"), text, depth + 1, root)]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
        value = max(1, int(low) + 1) if isinstance(low, int | float) else 1
        if isinstance(high, int | float) and value > high:
            value = int(high)
        return value if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def _json_answer(response_format: Any, words: list[str]) -> list[str] | None:
    """The answer as JSON text split into words, when ``response_format`` asks for JSON (a
    ``json_object``: ``{"answer": ...}``; a ``json_schema``: an instance of its schema)."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    text = " ".join(words)
    if kind == "json_object":
        value: Any = {"answer": text}
    elif kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        value = schema_instance(schema, text)
    else:
        return None
    return json.dumps(value).split(" ")


def simulate(
    messages: list[Any],
    max_tokens: int | None,
    config: SimConfig,
    *,
    tools: Any = None,
    system: Any = None,
    tool_choice: Any = None,
    response_format: Any = None,
) -> SimReply:
    """The reply to a chat request: a tool call when a tool is to be called (see :func:`_tool_to_call`;
    its arguments fit the tool's parameter schema), else words (JSON when ``response_format`` asks)."""
    prompt = prompt_text(messages, system)
    prompt_tokens = count_tokens(prompt)
    cached = int(prompt_tokens * config.cached_fraction)
    written = min(prompt_tokens - cached, int(prompt_tokens * config.cache_write_fraction))
    tool = _tool_to_call(tools, tool_choice, messages)
    if tool is not None:
        schema = (tool.get("function") or {}).get("parameters") or tool.get("input_schema")
        arguments = schema_instance(schema or {"type": "object"}, " ".join(prompt.split()[:3]))
        call = {"name": _tool_name(tool), "arguments": json.dumps(arguments)}
        return SimReply([], prompt_tokens, cached, config.reasoning_tokens, "tool_calls", call, written)
    if config.knowledge:
        said = knowledge_answer(config.knowledge, last_user_text(messages), config.skill).split()
    elif config.echo:
        said = last_user_text(messages).split() or ["(nothing)"]
    else:
        said = answer_words(prompt, config.output_tokens)
    said = _json_answer(response_format, said) or said
    cap = len(said) if max_tokens is None else max(1, max_tokens)
    finish = "length" if cap < len(said) else "stop"
    return SimReply(said[:cap], prompt_tokens, cached, config.reasoning_tokens, finish, None, written)


def openai_usage(reply: SimReply, n: int = 1) -> dict[str, Any]:
    """OpenAI ``usage`` of a reply (``n`` choices)."""
    completion = reply.completion_tokens * n
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": reply.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens * n},
    }


def openai_completion(request: dict[str, Any], reply: SimReply) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` of a reply."""
    n = int(request.get("n") or 1)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": " ".join(reply.words) if not reply.tool_call else None,
    }
    if reply.tool_call:
        message["tool_calls"] = [{"id": "call_sim", "type": "function", "function": reply.tool_call}]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "sim"),
        "choices": [
            {"index": i, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}
            for i in range(n)
        ],
        "usage": openai_usage(reply, n),
    }


SIM_THINKING = "The simulated model thinks before it answers."
SIM_SIGNATURE = "sim-signature"


def _stop_at(request: dict[str, Any], words: list[str]) -> tuple[list[str], str | None]:
    """``words`` cut before the first one that is one of the request's ``stop_sequences``."""
    stops = [s for s in request.get("stop_sequences") or [] if isinstance(s, str)]
    for index, word in enumerate(words):
        if word in stops:
            return words[:index], word
    return words, None


def anthropic_message(request: dict[str, Any], reply: SimReply) -> dict[str, Any]:
    """The Anthropic ``message`` of a reply: a thinking block first when ``thinking`` is enabled, the
    text cut at a stop sequence (``stop_reason: stop_sequence``)."""
    content: list[dict[str, Any]] = []
    thinking = request.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        content.append({"type": "thinking", "thinking": SIM_THINKING, "signature": SIM_SIGNATURE})
    stop_sequence = None
    if reply.tool_call:
        content.append(
            {
                "type": "tool_use",
                "id": "toolu_sim",
                "name": reply.tool_call["name"],
                "input": orjson.loads(reply.tool_call["arguments"]),
            }
        )
        stop = "tool_use"
    else:
        words, stop_sequence = _stop_at(request, reply.words)
        content.append({"type": "text", "text": " ".join(words)})
        stop = "max_tokens" if reply.finish_reason == "length" else "end_turn"
        stop = "stop_sequence" if stop_sequence is not None else stop
    return {
        "id": f"msg_{uuid.uuid4().hex[:12]}",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "sim"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": reply.prompt_tokens - reply.cached_tokens - reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cached_tokens,
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "output_tokens": reply.completion_tokens,
        },
    }


def openai_chunk_payloads(request: dict[str, Any], reply: SimReply) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` payloads of a streamed reply, in order (without the id, object,
    created and model fields every chunk shares): role, tool call, one chunk per word, finish,
    then usage when ``stream_options.include_usage`` asks for it."""
    n = int(request.get("n") or 1)
    out: list[dict[str, Any]] = [
        {"choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        for i in range(n)
    ]
    if reply.tool_call:
        call = {"index": 0, "id": "call_sim", "type": "function", "function": reply.tool_call}
        out += [
            {"choices": [{"index": i, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
            for i in range(n)
        ]
    for pos, word in enumerate(reply.words):
        text = word if pos == 0 else " " + word
        out += [
            {"choices": [{"index": i, "delta": {"content": text}, "finish_reason": None}]} for i in range(n)
        ]
    out += [{"choices": [{"index": i, "delta": {}, "finish_reason": reply.finish_reason}]} for i in range(n)]
    if (request.get("stream_options") or {}).get("include_usage"):
        out.append({"choices": [], "usage": openai_usage(reply, n)})
    return out


def is_content_chunk(payload: dict[str, Any]) -> bool:
    """True for a chunk that carries answer text."""
    choices = payload.get("choices") or []
    return bool(choices and choices[0].get("delta", {}).get("content"))
