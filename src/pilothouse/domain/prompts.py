"""Prompts of the registry, as values: a version (its template, model, parameters, tools and response
format), a reference to one (``name@label`` or ``name@3``), an entry of the audit list, rendering into
chat messages and the diff between two versions. Nothing here reads a database or the clock."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pilothouse.domain.chat_parameters import parameter_problem
from pilothouse.domain.templating import (
    PLACEHOLDER,
    TemplateError,
    lookup_variable,
    render,
    render_messages,
    template_variables,
    to_text,
)
from pilothouse.domain.traces import NUL, NUL_REPLACEMENT, has_control_characters

__all__ = [
    "LATEST",
    "MAX_TEMPLATE_BYTES",
    "PRODUCTION",
    "PromptError",
    "PromptEvent",
    "PromptRef",
    "PromptSummary",
    "PromptVersion",
    "check_label",
    "check_name",
    "check_request_fields",
    "diff_versions",
    "parse_ref",
    "prompt_from_document",
]

PRODUCTION = "production"
LATEST = "latest"  # automatic: the newest version; never set by hand
MAX_TEMPLATE_BYTES = 256 * 1024  # a template, its messages and its configuration together
MAX_MESSAGES = 256
MAX_RENDERED_BYTES = 8 * 1024 * 1024  # a filled template: a variable used many times must not blow up memory
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_CONFIG_KEYS = ("model", "parameters", "tools", "response_format")

PromptKind = Literal["text", "chat"]


class PromptError(ValueError):
    """A prompt, reference or label that cannot be used; the message says what and why."""


def check_name(name: Any) -> str:
    """``name`` if it is a valid prompt name (letters, digits, ``.``, ``_``, ``-``; at most 128)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise PromptError(
            f"invalid prompt name {str(name)[:80]!r}: use letters, digits, '.', '_' or '-' (at most 128, "
            "starting with a letter or digit)"
        )
    return name


def check_label(label: Any, *, settable: bool = True) -> str:
    """``label`` if it is a valid label (lower case letters, digits, ``.``, ``_``, ``-``; at most 64);
    ``latest`` names the newest version and cannot be moved (``settable``)."""
    if not isinstance(label, str) or not _LABEL.match(label) or label.isdigit():
        raise PromptError(
            f"invalid label {str(label)[:80]!r}: use lower-case letters, digits, '.', '_' or '-' (at most "
            "64, not only digits)"
        )
    if settable and label == LATEST:
        raise PromptError("the label 'latest' always names the newest version; it cannot be moved")
    return label


@dataclass(frozen=True, slots=True)
class PromptRef:
    """A reference to one version: by ``label`` or by ``version`` number (exactly one of them)."""

    name: str
    label: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.version if self.version is not None else self.label}"


def parse_ref(text: Any, default_label: str = PRODUCTION) -> PromptRef:
    """``name``, ``name@label`` or ``name@3`` as a :class:`PromptRef`; a bare name means ``default_label``."""
    if not isinstance(text, str):
        raise PromptError("a prompt reference is a string: name, name@label or name@version")
    name, at, selector = text.strip().partition("@")
    check_name(name)
    if not at:
        return PromptRef(name, label=default_label)
    if selector.isdigit() and len(selector) <= 9:
        if int(selector) < 1:
            raise PromptError(f"prompt {name!r}: versions start at 1")
        return PromptRef(name, version=int(selector))
    return PromptRef(name, label=check_label(selector, settable=False))


def ref_from_fields(name: Any, label: Any = None, version: Any = None) -> PromptRef:
    """A reference from separate fields (the gateway's ``prompt`` object, query parameters)."""
    check_name(name)
    if label is not None and version is not None:
        raise PromptError("give a prompt's label or its version, not both")
    if version is not None:
        if isinstance(version, str) and version.isdigit() and len(version) <= 9:
            version = int(version)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise PromptError("a prompt version is a whole number from 1")
        return PromptRef(name, version=version)
    return PromptRef(name, label=PRODUCTION if label is None else check_label(label, settable=False))


@dataclass(frozen=True, slots=True)
class PromptVersion:
    """One immutable version of a prompt. ``template`` is a string (``text``) or a list of OpenAI-shaped
    messages (``chat``) with ``{{ variable }}`` placeholders; ``labels`` are those pointing at it when
    it was read (``latest`` included for the newest)."""

    name: str
    version: int
    kind: PromptKind
    template: str | tuple[Mapping[str, Any], ...]
    model: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[Mapping[str, Any], ...] | None = None
    response_format: Mapping[str, Any] | None = None
    message: str | None = None  # the commit message
    created_by: str | None = None
    created_ns: int = 0
    labels: tuple[str, ...] = ()
    project_id: str = "default"
    fallback: bool = False  # the SDK's fallback given in code (version 0), not a stored version

    @property
    def span_attributes(self) -> dict[str, str]:
        """The span attributes that tie a traced call to this version (the overview's breakdown by
        prompt version reads them)."""
        return {"pilothouse.prompt.name": self.name, "pilothouse.prompt.version": str(self.version)}

    @property
    def variables(self) -> list[str]:
        """The variables the template uses, in order of first use."""
        if isinstance(self.template, str):
            return template_variables(self.template)
        names: list[str] = []
        for message in self.template:
            content = message.get("content")
            texts = [content] if isinstance(content, str) else []
            if isinstance(content, list):
                texts = [
                    p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
                ]
            for text in texts:
                names.extend(template_variables(text))
        return list(dict.fromkeys(names))

    def _texts(self) -> list[str]:
        if isinstance(self.template, str):
            return [self.template]
        texts: list[str] = []
        for message in self.template:
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(
                    p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
                )
        return texts

    def rendered_size(self, variables: Mapping[str, Any]) -> int:
        """How many characters the filled template would have (without filling it in)."""
        sizes: dict[str, int] = {}
        total = 0
        for text in self._texts():
            total += len(text)
            for match in PLACEHOLDER.finditer(text):
                name = match.group(1)
                if name not in sizes:
                    sizes[name] = len(to_text(lookup_variable(name, variables)))
                total += sizes[name] - len(match.group(0))
        return total

    def compile(
        self, variables: Mapping[str, Any] | None = None, /, **more: Any
    ) -> str | list[dict[str, Any]]:
        """The template with its variables filled in: a string for a text prompt, messages for a chat one.
        A variable the template uses and that is not given is a :class:`~pilothouse.domain.templating.
        TemplateError` naming it, as is a result over :data:`MAX_RENDERED_BYTES` characters."""
        values = {**(variables or {}), **more}
        size = self.rendered_size(values)
        if size > MAX_RENDERED_BYTES:
            raise TemplateError.too_large(size, MAX_RENDERED_BYTES)
        if isinstance(self.template, str):
            return render(self.template, values)
        return render_messages(self.template, values)

    def messages(self, variables: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Chat messages: a chat prompt's, or a text prompt as one ``user`` message."""
        compiled = self.compile(variables)
        return [{"role": "user", "content": compiled}] if isinstance(compiled, str) else compiled

    def request_fields(self) -> dict[str, Any]:
        """What the version adds to a chat request: model, parameters, tools, response format."""
        fields: dict[str, Any] = dict(self.parameters)
        if self.model is not None:
            fields["model"] = self.model
        if self.tools is not None:
            fields["tools"] = [dict(t) for t in self.tools]
        if self.response_format is not None:
            fields["response_format"] = dict(self.response_format)
        return fields

    def document(self) -> dict[str, Any]:
        """The version as JSON (the API's and the SDK's shape)."""
        return {
            "name": self.name,
            "version": self.version,
            "type": self.kind,
            "prompt": self.template if isinstance(self.template, str) else [dict(m) for m in self.template],
            "model": self.model,
            "parameters": dict(self.parameters),
            "tools": None if self.tools is None else [dict(t) for t in self.tools],
            "response_format": None if self.response_format is None else dict(self.response_format),
            "message": self.message,
            "created_by": self.created_by,
            "created_ns": self.created_ns,
            "labels": list(self.labels),
            "variables": self.variables,
        }


def prompt_from_document(name: str, document: Mapping[str, Any], *, version: int = 0) -> PromptVersion:
    """A checked version from a JSON document (``type``, ``prompt``, ``model``, ``parameters``,
    ``tools``, ``response_format``, ``message``); :class:`PromptError` names the field that is wrong.
    Sizes and counts are bounded: what the registry stores, every gateway process caches."""
    if not isinstance(document, Mapping):
        raise PromptError("a prompt version is an object with 'prompt' (a string or a list of messages)")
    known = {"type", "prompt", *_CONFIG_KEYS, "message", "labels", "version", "name", "created_by"}
    known |= {"created_ns", "variables"}
    unknown = sorted(str(k) for k in document if k not in known)
    if unknown:
        raise PromptError(
            f"unknown field {unknown[0]!r} (fields: type, prompt, {', '.join(_CONFIG_KEYS)}, message)"
        )
    template = document.get("prompt")
    kind = document.get("type") or ("text" if isinstance(template, str) else "chat")
    if kind not in ("text", "chat"):
        raise PromptError("'type' must be 'text' or 'chat'")
    checked: str | tuple[Mapping[str, Any], ...]
    if kind == "text":
        if not isinstance(template, str) or not template:
            raise PromptError("a text prompt's 'prompt' must be a non-empty string")
        checked = template
    else:
        checked = _chat_template(template)
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, Mapping) or not all(isinstance(k, str) for k in parameters):
        raise PromptError("'parameters' must be an object (temperature, max_tokens, ...)")
    for reserved in ("model", "messages", "tools", "response_format", "stream", "prompt"):
        if reserved in parameters:
            raise PromptError(f"'parameters' cannot set {reserved!r}" + _OWN_FIELD.get(reserved, ""))
    model = document.get("model")
    if model is not None and (not isinstance(model, str) or not model or len(model) > 200):
        raise PromptError("'model' must be a model name")
    tools = document.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools)):
        raise PromptError("'tools' must be a list of tool objects")
    response_format = document.get("response_format")
    if response_format is not None and not isinstance(response_format, Mapping):
        raise PromptError("'response_format' must be an object")
    message = document.get("message")
    if message is not None and (not isinstance(message, str) or len(message) > 2000):
        raise PromptError("'message' must be a string of at most 2000 characters")
    if message is not None:
        message = message.replace(NUL, NUL_REPLACEMENT)  # PostgreSQL's text cannot hold a NUL
    size = len(json.dumps({k: document.get(k) for k in ("prompt", *_CONFIG_KEYS)}, default=str))
    if size > MAX_TEMPLATE_BYTES:
        raise PromptError(f"the prompt is {size} bytes; at most {MAX_TEMPLATE_BYTES} are stored")
    return PromptVersion(
        name=check_name(name),
        version=version,
        kind="text" if kind == "text" else "chat",
        template=checked,
        model=model,
        parameters=dict(parameters),
        tools=None if tools is None else tuple(dict(t) for t in tools),
        response_format=None if response_format is None else dict(response_format),
        message=message,
    )


def check_request_fields(version: PromptVersion) -> None:
    """Refuse a version that every gateway call would refuse: its ``parameters`` (and ``tools``,
    ``response_format``) checked by the gateway's own rules for a chat request (a known name, in
    range, no number that is not finite). Done when a version is stored, not when one is read, so a
    reader never loses a version stored before a rule existed. A ``model`` with a control character
    (ESC, NUL) is refused too."""
    if version.model is not None and has_control_characters(version.model):
        raise PromptError("'model' must be a model name (no control characters)")
    for key, value in version.parameters.items():
        problem = parameter_problem(key, value)
        if problem is not None:
            raise PromptError(f"'parameters': {problem}")
    for key, value in (("tools", version.tools), ("response_format", version.response_format)):
        problem = parameter_problem(key, value)
        if problem is not None:
            raise PromptError(problem)


_OWN_FIELD = {
    "model": " (use 'model')",
    "tools": " (use 'tools')",
    "response_format": " (use 'response_format')",
}


def _chat_template(template: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(template, list) or not template:
        raise PromptError("a chat prompt's 'prompt' must be a non-empty list of {role, content} messages")
    if len(template) > MAX_MESSAGES:
        raise PromptError(f"a chat prompt has at most {MAX_MESSAGES} messages")
    for index, message in enumerate(template):
        if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
            raise PromptError(f"prompt[{index}] must be an object with a role ({', '.join(sorted(_ROLES))})")
        content = message.get("content")
        if not isinstance(content, str | list) and not (content is None and message.get("tool_calls")):
            raise PromptError(f"prompt[{index}].content must be a string or a list of content parts")
    return tuple(dict(m) for m in template)


@dataclass(frozen=True, slots=True)
class PromptSummary:
    """A prompt in the list: its newest version and where its labels point."""

    name: str
    latest: int
    labels: Mapping[str, int]
    updated_ns: int
    kind: PromptKind

    def document(self) -> dict[str, Any]:
        """As JSON."""
        return {
            "name": self.name,
            "latest_version": self.latest,
            "labels": dict(self.labels),
            "updated_ns": self.updated_ns,
            "type": self.kind,
        }


@dataclass(frozen=True, slots=True)
class PromptEvent:
    """One entry of a prompt's audit list: who did what and when. ``action`` is ``create`` (a new
    version), ``label`` (a label moved: ``previous`` is where it pointed), ``promote`` (a gated
    promotion that passed and moved the label), ``refuse`` (one that did not), ``canary`` (a canary
    started or stopped), ``canary-promote`` or ``canary-rollback`` (the canary controller's decisions,
    with the sequential test's figures in ``detail``)."""

    name: str
    action: str
    version: int | None
    label: str | None
    previous: int | None
    actor: str | None
    created_ns: int
    detail: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0

    def document(self) -> dict[str, Any]:
        """As JSON."""
        return {
            "seq": self.seq,
            "name": self.name,
            "action": self.action,
            "version": self.version,
            "label": self.label,
            "previous_version": self.previous,
            "actor": self.actor,
            "created_ns": self.created_ns,
            "detail": dict(self.detail),
        }


def _lines(version: PromptVersion) -> list[str]:
    """A version as text to compare: the template (message by message), then its configuration."""
    lines: list[str] = []
    if isinstance(version.template, str):
        lines.extend(version.template.splitlines())
    else:
        for message in version.template:
            lines.append(f"[{message.get('role')}]")
            content = message.get("content")
            if isinstance(content, str):
                lines.extend(content.splitlines())
            else:
                lines.append(json.dumps(content, sort_keys=True, ensure_ascii=False))
    config = {
        "model": version.model,
        "parameters": dict(version.parameters),
        "tools": None if version.tools is None else [dict(t) for t in version.tools],
        "response_format": None if version.response_format is None else dict(version.response_format),
    }
    lines.append("---")
    lines.extend(json.dumps(config, sort_keys=True, indent=2, ensure_ascii=False).splitlines())
    return lines


def diff_versions(old: PromptVersion, new: PromptVersion, context: int = 3) -> list[str]:
    """A unified diff (lines without their newline) from ``old`` to ``new``: template and configuration."""
    return list(
        difflib.unified_diff(
            _lines(old),
            _lines(new),
            f"{old.name}@{old.version}",
            f"{new.name}@{new.version}",
            n=context,
            lineterm="",
        )
    )


def labels_of(version: int, labels: Mapping[str, int], latest: int) -> tuple[str, ...]:
    """The labels pointing at ``version``, ``latest`` first when it is the newest."""
    named = sorted(label for label, at in labels.items() if at == version)
    return ((LATEST,) if version == latest else ()) + tuple(named)
