"""How values read on a page: money, durations, times, JSON, and model-call messages as a chat.

Pure functions; the templates use them as filters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from markupsafe import Markup

from pilothouse.domain.money import Money

MAX_TEXT_CHARS = 20_000  # longer texts are cut on the page (the API has them whole)


def money(value: Money | None, unknown: str = "–") -> str:
    """Money's one format for people (:meth:`Money.display`): ``$1,234.56``, ``$0.000412``."""
    return unknown if value is None else value.display()


def duration_ms(value: float | None) -> str:
    """``850 ms``, ``1.24 s``, ``2 min 5 s``."""
    if value is None or not math.isfinite(value):
        return "–"
    if value < 10:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.2f} s"
    if value < 3_600_000:
        minutes, seconds = divmod(round(value / 1000), 60)
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(round(value / 60_000), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def number(value: float | None) -> str:
    """``12,345`` (whole numbers) or ``0.83``."""
    if value is None:
        return "–"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def compact(value: float | None) -> str:
    """``950``, ``12.3k``, ``4.1M``."""
    if value is None:
        return "–"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return number(value)


def percent(value: float | None, digits: int = 1) -> str:
    """``12.5%`` of a fraction."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:.{digits}f}%"


def when(ns: int | None, *, minute: bool = False) -> str:
    """``2025-03-01 14:05:09 UTC`` (``2025-03-01 14:05 UTC`` with ``minute``)."""
    if ns is None:
        return "–"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime(
        "%Y-%m-%d %H:%M UTC" if minute else "%Y-%m-%d %H:%M:%S UTC"
    )


def iso(ns: int | None) -> str:
    """Machine-readable time for ``<time datetime>``."""
    if ns is None:
        return ""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def at(ns: int | None, minute: bool = False) -> Markup:
    """A time for people: ``<time>`` in UTC, which the page's script shows in the browser's time zone
    (the UTC time stays on hover). ``minute`` for a time known to the minute only (a rollup bucket's
    start): no seconds are shown, so it never reads as an exact time."""
    if ns is None:
        return Markup("–")
    utc = when(ns, minute=minute)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso(ns), utc, utc)


def short_id(value: str | None, size: int = 8) -> str:
    """The first characters of an id."""
    return (value or "")[:size]


def cut(text: str | None, size: int = 120) -> str:
    """Text on one line, at most ``size`` characters."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[: size - 1] + "…"


_CONTENT = re.compile(r'"role":\s*"(user|human)",\s*"content":\s*"((?:[^"\\]|\\.)*)')


def preview(text: str | None) -> str:
    """What a trace list shows of an input: the last user message of a chat (also of one cut short
    by the store's preview length), else the text."""
    if not text:
        return ""
    messages = chat_messages(text)
    if messages:
        users = [m for m in messages if m.role == "user"] or messages
        return " ".join(p.text for p in users[-1].parts) or text
    found = _CONTENT.findall(text)
    if found:
        try:
            return str(orjson.loads('"' + found[-1][1].rstrip("\\") + '"'))
        except orjson.JSONDecodeError:
            return str(found[-1][1])
    return text


def parse_json(text: str | None) -> Any:
    """The JSON value of a text that holds an object or array, else None."""
    if not text or text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def pretty(value: Any) -> str:
    """JSON pretty-printed (text that is JSON is parsed first); other text as it is, cut if huge."""
    if isinstance(value, str):
        parsed = parse_json(value)
        if parsed is None:
            return value if len(value) <= MAX_TEXT_CHARS else value[:MAX_TEXT_CHARS] + "\n… (cut)"
        value = parsed
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "\n… (cut)"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the model asked to call, with its arguments pretty-printed."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Part:
    """A piece of a message: ``text``, ``json`` (pretty-printed), ``image`` or ``tool_result``."""

    kind: str
    text: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a chat: role, content parts, tool calls, and the tool call it answers."""

    role: str
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = field(default=())
    tool_call_id: str | None = None
    name: str | None = None


def _text_part(text: str) -> Part:
    parsed = parse_json(text)
    if parsed is not None:
        return Part("json", pretty(parsed))
    return Part("text", text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "\n… (cut)")


def _parts(content: Any) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_part(content)] if content else []
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return [Part("json", pretty(content))]
    parts: list[Part] = []
    for piece in content:
        if isinstance(piece, str):
            parts.append(_text_part(piece))
            continue
        if not isinstance(piece, dict):
            parts.append(Part("json", pretty(piece)))
            continue
        kind = piece.get("type")
        if kind in ("text", "input_text", "output_text") or (kind is None and "text" in piece):
            parts.append(_text_part(str(piece.get("text") or piece.get("content") or "")))
        elif kind in ("image_url", "image", "input_image"):
            parts.append(Part("image", "[image]"))
        elif kind == "tool_result":
            inner = _parts(piece.get("content"))
            text = "\n".join(p.text for p in inner) if inner else ""
            parts.append(Part("tool_result", text, label=str(piece.get("tool_use_id") or "")))
        elif kind != "tool_use":  # tool_use pieces become tool calls
            parts.append(Part("json", pretty(piece)))
    return parts


def _tool_calls(message: dict[str, Any]) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for call in message.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        inner = call.get("function")
        function: dict[str, Any] = inner if isinstance(inner, dict) else call
        arguments = function.get("arguments", function.get("input", ""))
        calls.append(
            ToolCall(
                name=str(function.get("name") or "?"),
                arguments=pretty(arguments) if arguments not in ("", None) else "",
                id=call.get("id"),
            )
        )
    content = message.get("content")
    if isinstance(content, list):  # Anthropic: tool_use pieces in the content
        for piece in content:
            if isinstance(piece, dict) and piece.get("type") == "tool_use":
                calls.append(
                    ToolCall(str(piece.get("name") or "?"), pretty(piece.get("input") or {}), piece.get("id"))
                )
    return calls


def _message(data: Any) -> ChatMessage | None:
    if not isinstance(data, dict) or not isinstance(data.get("role"), str):
        return None
    return ChatMessage(
        role=data["role"],
        parts=tuple(_parts(data.get("content"))),
        tool_calls=tuple(_tool_calls(data)),
        tool_call_id=data.get("tool_call_id") if isinstance(data.get("tool_call_id"), str) else None,
        name=data.get("name") if isinstance(data.get("name"), str) else None,
    )


def _request_messages(data: dict[str, Any]) -> Any:
    """The messages of a Responses API request (``input``: text or items, ``instructions``) or a
    legacy completions request (``prompt``); ``data`` itself when it is neither."""
    if isinstance(data.get("input"), str):
        messages: list[Any] = [{"role": "user", "content": data["input"]}]
    elif isinstance(data.get("input"), list):
        messages = [m for m in data["input"] if isinstance(m, dict) and isinstance(m.get("role"), str)]
    elif isinstance(data.get("prompt"), str):
        messages = [{"role": "user", "content": data["prompt"]}]
    else:
        return data
    if isinstance(data.get("instructions"), str):
        messages.insert(0, {"role": "system", "content": data["instructions"]})
    return messages or data


def chat_messages(text: str | None, *, default_role: str | None = None) -> list[ChatMessage] | None:
    """The messages of a model call's input or output: a JSON list of messages, one message object,
    a request body with ``messages`` (and ``system``), or, with ``default_role``, plain text as one
    message of that role. None when the text is not a chat."""
    if text is None:
        return None
    data = parse_json(text)
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        system = data.get("system")
        messages = list(data["messages"])
        if isinstance(system, str | list):
            messages.insert(0, {"role": "system", "content": system})
        data = messages
    elif isinstance(data, dict) and "role" not in data:
        data = _request_messages(data)
    if isinstance(data, dict):
        data = [data]
    if isinstance(data, list) and data:
        messages = [_message(m) for m in data]
        if all(m is not None for m in messages):
            return [m for m in messages if m is not None]
        return None
    if data is None and default_role is not None:
        return [ChatMessage(default_role, (_text_part(text),))]
    return None


def last_turn(messages: list[ChatMessage] | None) -> list[ChatMessage]:
    """The messages after the last assistant message: what is new in a turn of a conversation, led by
    the user's last message when the new ones are only tool results."""
    if not messages:
        return []
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "assistant":
            new = messages[index + 1 :]
            if any(m.role == "user" for m in new):
                return new
            # a turn of tool results only (an agent's loop): the user's last message, then them
            asked = [m for m in messages[:index] if m.role == "user"]
            return asked[-1:] + new
    return [m for m in messages if m.role != "system"] or messages
