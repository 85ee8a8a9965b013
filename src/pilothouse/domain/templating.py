"""Prompt and scorer-option templates: ``{{ name }}`` and ``{{ name.sub }}`` placeholders, nothing else.

Mustache/promptfoo style without logic: a placeholder names a variable (dots walk into mappings and
list indices) and is replaced by its value; a missing variable is an error that names it, never an
empty string. Strings are inserted as they are, ``None`` as the empty string, numbers as written,
booleans, mappings and lists as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "TemplateError",
    "has_placeholders",
    "lookup_variable",
    "render",
    "render_messages",
    "render_value",
    "resolve",
    "template_variables",
    "to_text",
]

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*\}\}")
_MISSING = object()


class TemplateError(ValueError):
    """A template names a variable that the variables do not have (or would be too large filled in)."""

    def __init__(self, variable: str, available: Sequence[str]) -> None:
        shown = ", ".join(sorted(available)) or "none"
        super().__init__(f"template variable '{variable}' is not defined (variables: {shown})")
        self.variable = variable

    @classmethod
    def too_large(cls, size: int, limit: int) -> TemplateError:
        """The error of a template whose filled-in text would be ``size`` characters, over ``limit``."""
        error = cls.__new__(cls)
        ValueError.__init__(error, f"the filled-in template would be {size:,} characters; at most {limit:,}")
        error.variable = ""
        return error


def to_text(value: Any) -> str:
    """How a value reads inside a rendered template (and as text to compare against)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def lookup_variable(path: str, variables: Mapping[str, Any]) -> Any:
    """The value a dotted name (``item.sub``, ``items.0``) points to; :class:`TemplateError` if absent."""
    current: Any = variables
    for part in path.split("."):
        found: Any = _MISSING
        if isinstance(current, Mapping):
            found = current.get(part, _MISSING)
        elif isinstance(current, Sequence) and not isinstance(current, str) and part.isdigit():
            index = int(part)
            found = current[index] if index < len(current) else _MISSING
        if found is _MISSING:
            raise TemplateError(path, list(variables))
        current = found
    return current


def template_variables(template: str) -> list[str]:
    """The variable names a template uses, in order of first use."""
    return list(dict.fromkeys(match.group(1) for match in PLACEHOLDER.finditer(template)))


def has_placeholders(template: str) -> bool:
    """True when the string has at least one ``{{ ... }}`` placeholder."""
    return PLACEHOLDER.search(template) is not None


def render(template: str, variables: Mapping[str, Any]) -> str:
    """The template with every placeholder replaced by its variable's text.

    >>> render("Hello {{ user.name }}!", {"user": {"name": "Ada"}})
    'Hello Ada!'
    """
    return PLACEHOLDER.sub(lambda match: to_text(lookup_variable(match.group(1), variables)), template)


def resolve(template: str, variables: Mapping[str, Any]) -> Any:
    """Like :func:`render`, except that a template that is exactly one placeholder gives the variable's
    value itself (a list stays a list, a number a number): ``resolve("{{expected}}", {"expected": 42})``
    is ``42``."""
    match = PLACEHOLDER.fullmatch(template.strip())
    if match is not None:
        return lookup_variable(match.group(1), variables)
    return render(template, variables)


def render_value(value: Any, variables: Mapping[str, Any]) -> Any:
    """:func:`resolve` applied to every string inside a value (lists and mappings are walked)."""
    if isinstance(value, str):
        return resolve(value, variables)
    if isinstance(value, Mapping):
        return {key: render_value(item, variables) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, variables) for item in value]
    return value


def _render_part(part: Any, variables: Mapping[str, Any]) -> Any:
    if not isinstance(part, Mapping):
        return part
    rendered = dict(part)
    if isinstance(part.get("text"), str):
        rendered["text"] = render(part["text"], variables)
    image = part.get("image_url")
    if isinstance(image, Mapping) and isinstance(image.get("url"), str):
        rendered["image_url"] = {**image, "url": render(image["url"], variables)}
    return rendered


def render_messages(
    messages: Sequence[Mapping[str, Any]], variables: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Chat messages (OpenAI shape) with their templates rendered: string contents, and the ``text`` and
    ``image_url.url`` of content parts. Other fields are copied unchanged; the input is not modified."""
    rendered: list[dict[str, Any]] = []
    for message in messages:
        copy = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            copy["content"] = render(content, variables)
        elif isinstance(content, list):
            copy["content"] = [_render_part(part, variables) for part in content]
        rendered.append(copy)
    return rendered
