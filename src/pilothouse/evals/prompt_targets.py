"""``target.prompt: name@label`` (or ``name@3``, or ``{name, label | version}``) in an eval spec: the
registry's version becomes the target's messages (its templates filled per item, as a spec's own
``messages`` are), model and parameters; the target's own ``model``, ``max_tokens``, ``temperature``
and ``params`` win. The run records which version it used, and every call's span names it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pilothouse.domain.prompts import PromptError, PromptRef, PromptVersion, parse_ref, ref_from_fields

__all__ = ["PromptResolver", "is_prompt_reference", "resolve_prompt_target"]

PromptResolver = Callable[[str, PromptRef], PromptVersion]  # (project, reference) -> the version
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}@[A-Za-z0-9._-]{1,64}$")


def is_prompt_reference(value: Any) -> bool:
    """Whether a target's ``prompt`` names a registered prompt (else it is a user-message template)."""
    if isinstance(value, Mapping):
        return "name" in value
    return isinstance(value, str) and _REF.match(value.strip()) is not None


def resolve_prompt_target(
    target: Mapping[str, Any], resolve: PromptResolver | None, project: str
) -> Mapping[str, Any]:
    """``target`` with its prompt reference replaced by the version's messages, model and parameters
    (unchanged when it has none). Raises :class:`ValueError` with the reason when it cannot be used."""
    prompt = target.get("prompt")
    if not is_prompt_reference(prompt):
        return target
    try:
        if isinstance(prompt, Mapping):
            ref = ref_from_fields(prompt.get("name"), prompt.get("label"), prompt.get("version"))
        else:
            ref = parse_ref(prompt)
    except PromptError as exc:
        raise ValueError(f"target.prompt: {exc}") from None
    if target.get("messages") is not None:
        raise ValueError("target: give 'messages' or a registered 'prompt', not both")
    if resolve is None:
        raise ValueError(
            f"target.prompt: {ref} names a prompt of the registry, which this spec was loaded without "
            "(run it with 'pilothouse eval run', which reads the registry of its database)"
        )
    try:
        version = resolve(project, ref)
    except LookupError as exc:
        raise ValueError(f"target.prompt: {str(exc).strip(chr(39))}") from None
    resolved = {key: value for key, value in target.items() if key != "prompt"}
    resolved["messages"] = (
        [{"role": "user", "content": version.template}]
        if isinstance(version.template, str)
        else [dict(m) for m in version.template]
    )
    if resolved.get("model") is None:
        if version.model is None:
            raise ValueError(f"target: prompt {ref} names no model; give the target a 'model'")
        resolved["model"] = version.model
    params = dict(version.parameters)
    if version.tools is not None:
        params["tools"] = [dict(t) for t in version.tools]
    if version.response_format is not None:
        params["response_format"] = dict(version.response_format)
    own = target.get("params")
    resolved["params"] = {**params, **(dict(own) if isinstance(own, Mapping) else {})}
    resolved["prompt_version"] = {"name": version.name, "version": version.version, "ref": str(ref)}
    return resolved
