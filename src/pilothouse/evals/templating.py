"""The templates of prompts and scorer options: the pure rendering lives in
:mod:`pilothouse.domain.templating` (the prompt registry renders with it too); re-exported here."""

from pilothouse.domain.templating import (
    PLACEHOLDER,
    TemplateError,
    has_placeholders,
    lookup_variable,
    render,
    render_messages,
    render_value,
    resolve,
    template_variables,
    to_text,
)

__all__ = [
    "PLACEHOLDER",
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
