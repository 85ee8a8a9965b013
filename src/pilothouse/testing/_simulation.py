"""A deterministic simulated model: the same request always gets the same answer and token counts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

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
    always answers 500."""

    latency_ms: float = 0.0  # before the first byte
    tokens_per_s: float = 0.0  # 0: all at once
    output_tokens: int = 12  # answer length when max_tokens does not cap it
    cached_fraction: float = 0.0  # share of prompt tokens reported as cached
    reasoning_tokens: int = 0
    drop_after_tokens: int | None = None  # cut streams after this many tokens
    retry_after_s: float = 1.0


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

    @property
    def completion_tokens(self) -> int:
        return len(self.words) + self.reasoning_tokens


def simulate(
    messages: list[Any], max_tokens: int | None, config: SimConfig, *, tools: Any = None, system: Any = None
) -> SimReply:
    """The reply to a chat request: a tool call when tools are offered, else words."""
    prompt = prompt_text(messages, system)
    prompt_tokens = count_tokens(prompt)
    cached = int(prompt_tokens * config.cached_fraction)
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
        )
    n = config.output_tokens if max_tokens is None else min(config.output_tokens, max(1, max_tokens))
    finish = "length" if max_tokens is not None and max_tokens < config.output_tokens else "stop"
    return SimReply(answer_words(prompt, n), prompt_tokens, cached, config.reasoning_tokens, finish)
