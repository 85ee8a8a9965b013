"""Two deterministic models behind a real provider (registered as ``rule-test``) for the optimiser's
tests: a task model that labels sentiment and follows a few instructions, and a scripted proposer that
improves the best instruction it is shown. Both answer like any provider, through the gateway, so
their calls are routed, priced and traced as real ones are.

The task model reads the last user message. Its label ignores negation ("not good" comes out
positive) unless the system instruction mentions negation; it answers "The sentiment is LABEL."
unless the instruction says "one word" or the demonstrations are one word, when it answers LABEL.
The proposer takes the best instruction of the meta-prompt (the last listed) and adds what it lacks:
first "Answer with one word", then the rule about negation."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.providers.registry import register

POSITIVE = ("good", "great", "lovely", "fine")


def true_label(text: str) -> str:
    """The right label: positive words are positive unless negated with 'not'."""
    words = text.lower().split()
    for index, word in enumerate(words):
        if word.strip(".,") in POSITIVE:
            return "negative" if index and words[index - 1] == "not" else "positive"
    return "negative"


def _text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


class RuleProvider:
    """``options: {role: task | proposer, fail_file: PATH}``; with ``fail_file`` existing, the
    proposer fails (a 400, not retried) once it is shown an instruction besides the first."""

    def __init__(self, deployment: Deployment) -> None:
        self.role = str(deployment.options.get("role", "task"))
        self.fail_file = deployment.options.get("fail_file")
        self.model = deployment.model

    def _task(self, messages: list[Any]) -> str:
        system = " ".join(_text(m) for m in messages if m.get("role") == "system").lower()
        demos = [_text(m) for m in messages if m.get("role") == "assistant"]
        user = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        label = true_label(user)
        if "negation" not in system and label == "negative" and any(w in user.lower() for w in POSITIVE):
            label = "positive"  # the naive reading of "not good"
        one_word = "one word" in system or (demos and all(len(d.split()) == 1 for d in demos))
        return label if one_word else f"The sentiment is {label}."

    def _propose(self, messages: list[Any]) -> str:
        prompt = _text(messages[-1])
        shown = [
            json.loads(line[len("instruction: ") :])
            for line in prompt.splitlines()
            if line.startswith("instruction: ")
        ]
        if self.fail_file and Path(self.fail_file).exists() and len(shown) > 1:
            raise ProviderError(400, "the scripted proposer was told to fail", retryable=False)
        best = (
            shown[-1] if shown and shown[-1] != "(no instruction)" else "Classify the sentiment of the text."
        )
        if "one word" not in best:
            best += " Answer with one word: positive or negative."
        elif "negation" not in best:
            best += " Mind negation: 'not good' is negative."
        else:
            best += " Be careful."
        return f"<instruction>{best}</instruction>"

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = list(request.get("messages") or [])
        text = self._propose(messages) if self.role == "proposer" else self._task(messages)
        prompt_tokens = sum(len(_text(m).split()) for m in messages)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(text.split()),
                "total_tokens": prompt_tokens + len(text.split()),
            },
        }

    async def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        raise ProviderError(400, "the rule models do not stream")
        yield {}  # pragma: no cover  (an async generator)

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError(400, "the rule models do not embed")

    async def close(self) -> None:
        return None


register("rule-test", RuleProvider)
