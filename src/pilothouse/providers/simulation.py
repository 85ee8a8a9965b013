"""A deterministic simulated model: the same request always gets the same answer and token counts."""

from __future__ import annotations

import functools
import hashlib
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
        return len(self.words) + self.reasoning_tokens


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


def simulate(
    messages: list[Any], max_tokens: int | None, config: SimConfig, *, tools: Any = None, system: Any = None
) -> SimReply:
    """The reply to a chat request: a tool call when tools are offered, else words."""
    prompt = prompt_text(messages, system)
    prompt_tokens = count_tokens(prompt)
    cached = int(prompt_tokens * config.cached_fraction)
    written = min(prompt_tokens - cached, int(prompt_tokens * config.cache_write_fraction))
    if tools:
        tool = tools[0]
        name = tool.get("function", {}).get("name") or tool.get("name") or "tool"
        return SimReply(
            [],
            prompt_tokens,
            cached,
            config.reasoning_tokens,
            "tool_calls",
            {"name": name, "arguments": '{"query": "' + " ".join(prompt.split()[:3]) + '"}'},
            written,
        )
    if config.knowledge:
        said = knowledge_answer(config.knowledge, last_user_text(messages), config.skill).split()
        cap = len(said) if max_tokens is None else max(1, max_tokens)
        finish = "length" if cap < len(said) else "stop"
        return SimReply(said[:cap], prompt_tokens, cached, config.reasoning_tokens, finish, None, written)
    if config.echo:
        said = last_user_text(messages).split() or ["(nothing)"]
        cap = len(said) if max_tokens is None else max(1, max_tokens)
        finish = "length" if cap < len(said) else "stop"
        return SimReply(said[:cap], prompt_tokens, cached, config.reasoning_tokens, finish, None, written)
    n = config.output_tokens if max_tokens is None else min(config.output_tokens, max(1, max_tokens))
    finish = "length" if max_tokens is not None and max_tokens < config.output_tokens else "stop"
    return SimReply(
        answer_words(prompt, n), prompt_tokens, cached, config.reasoning_tokens, finish, None, written
    )


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


def anthropic_message(request: dict[str, Any], reply: SimReply) -> dict[str, Any]:
    """The Anthropic ``message`` of a reply."""
    if reply.tool_call:
        content: list[dict[str, Any]] = [
            {
                "type": "tool_use",
                "id": "toolu_sim",
                "name": reply.tool_call["name"],
                "input": orjson.loads(reply.tool_call["arguments"]),
            }
        ]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": " ".join(reply.words)}]
        stop = "max_tokens" if reply.finish_reason == "length" else "end_turn"
    return {
        "id": f"msg_{uuid.uuid4().hex[:12]}",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "sim"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
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
