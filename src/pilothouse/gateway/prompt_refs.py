"""Prompt references in chat requests: ``"prompt": {"name": ..., "label": ... | "version": ...,
"variables": {...}}``. The gateway renders the registry's version into messages (the request's own
messages follow them) and applies its model, parameters, tools and response format unless the request
sets them. A resolved reference is one dict lookup (the registry's cache, kept current by pushes);
the first use of a reference in a process reads the database in a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pilothouse.domain.prompts import PromptError, PromptVersion, ref_from_fields
from pilothouse.domain.templating import TemplateError
from pilothouse.gateway.validation import InvalidRequest
from pilothouse.prompts import PromptNotFound, PromptRegistry

__all__ = ["PromptReferenceError", "apply_prompt_reference"]

_FIELDS = frozenset({"name", "label", "version", "variables"})


class PromptReferenceError(InvalidRequest):
    """A prompt reference that cannot be used: malformed (400), unknown (404), a missing variable (400)."""


async def apply_prompt_reference(
    registry: PromptRegistry | None, project_id: str, request: Mapping[str, Any], sticky: str | None = None
) -> tuple[dict[str, Any], PromptVersion]:
    """``request`` with its ``prompt`` reference rendered: (the new request, the version used). A
    label running a canary picks its arm by ``sticky`` (the end user)."""
    reference = request.get("prompt")
    if not isinstance(reference, Mapping) or not isinstance(reference.get("name"), str):
        raise PromptReferenceError(
            400, "'prompt' must be an object {name, label or version, variables}.", "prompt"
        )
    unknown = sorted(str(k) for k in reference if k not in _FIELDS)
    if unknown:
        raise PromptReferenceError(
            400, f"'prompt' has an unknown field {unknown[0]!r}.", f"prompt.{unknown[0]}"
        )
    variables = reference.get("variables") or {}
    if not isinstance(variables, Mapping):
        raise PromptReferenceError(400, "'prompt.variables' must be an object.", "prompt.variables")
    if registry is None:
        raise PromptReferenceError(400, "This gateway has no prompt registry.", "prompt")
    try:
        ref = ref_from_fields(reference["name"], reference.get("label"), reference.get("version"))
    except PromptError as exc:
        raise PromptReferenceError(400, f"Invalid prompt reference: {exc}.", "prompt") from None
    try:
        if registry.is_cached(project_id, ref):
            version = registry.resolve(project_id, ref, sticky)
        else:
            version = await asyncio.to_thread(registry.resolve, project_id, ref, sticky)
    except PromptNotFound as exc:
        raise PromptReferenceError(404, f"{str(exc)[0].upper()}{str(exc)[1:]}.", "prompt") from None
    try:
        messages = version.messages(variables)
    except TemplateError as exc:
        raise PromptReferenceError(400, f"Prompt {ref}: {exc}.", "prompt.variables") from None
    rendered = {key: value for key, value in request.items() if key != "prompt"}
    own = request.get("messages")
    if own is not None and not isinstance(own, list):
        raise PromptReferenceError(422, "'messages' must be an array (they follow the prompt's).", "messages")
    rendered["messages"] = messages + (list(own) if isinstance(own, list) else [])
    for key, value in version.request_fields().items():
        rendered.setdefault(key, value)
    return rendered, version
