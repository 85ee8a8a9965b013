"""Tool calling for local models whose chat template knows no tools (SmolLM2's does not): the tools
are described in a system message in the Hermes format (``<tool_call>{"name": ..., "arguments": ...}
</tool_call>``, which Qwen, Hermes and many fine-tunes are trained on), and the answer is parsed back
into OpenAI ``tool_calls``. A model too small to follow the format simply answers in text."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson

_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)
_INSTRUCTIONS = (
    "You can call functions. They are described here as JSON schemas:\n<tools>\n{tools}\n</tools>\n"
    "To call one, answer with only this, once per call:\n"
    '<tool_call>{{"name": "<function name>", "arguments": {{<the arguments as JSON>}}}}</tool_call>\n'
    "Answer in plain text when no function helps."
)


def template_knows_tools(chat_template: Any) -> bool:
    """Whether a model's chat template renders the ``tools`` it is given."""
    return isinstance(chat_template, str) and "tools" in chat_template


def with_tool_instructions(messages: list[dict[str, Any]], tools: list[Any]) -> list[dict[str, Any]]:
    """The messages with the tools described at the end of the system message (one is added)."""
    described = "\n".join(orjson.dumps(t.get("function", t)).decode() for t in tools if isinstance(t, dict))
    instructions = _INSTRUCTIONS.format(tools=described)
    if messages and messages[0].get("role") in ("system", "developer"):
        first = messages[0]
        return [{**first, "content": f"{first.get('content') or ''}\n\n{instructions}"}, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(the text outside tool calls, or None when there is none; the OpenAI ``tool_calls``). A block
    that is not valid JSON with a ``name`` stays text."""
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    position = 0
    for match in _CALL.finditer(text):
        try:
            data = orjson.loads(match.group(1))
        except orjson.JSONDecodeError:
            continue
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            continue
        arguments = data.get("arguments", data.get("parameters", {}))
        kept.append(text[position : match.start()])
        position = match.end()
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": data["name"],
                    "arguments": arguments
                    if isinstance(arguments, str)
                    else orjson.dumps(arguments).decode(),
                },
            }
        )
    kept.append(text[position:])
    content = "".join(kept).strip()
    return (content or None) if calls else text, calls
