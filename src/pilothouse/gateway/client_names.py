"""An error about the OpenAI request that a surface translated names the client's own field.

The Anthropic and Responses surfaces hand the gateway an OpenAI chat request: Anthropic's
``output_config.format`` and the Responses API's ``text.format`` become ``response_format``. What the
gateway or a provider then refuses (the local model's ``unsupported_schema_feature``, JSON mode with
tools, an upstream's own 400) is worded for that translation; told to such a client as it is, it
would name a field the client never sent. Each surface renames it back before it renders the error."""

from __future__ import annotations

import re

from pilothouse.gateway._gateway import GatewayError

# ``response_format``, ``response_format.json_schema`` and ``response_format.json_schema.schema``
_RESPONSE_FORMAT = re.compile(r"\bresponse_format(\.json_schema)?(\.schema)?\b")

# what each surface calls the OpenAI request's response_format (and its schema)
MESSAGES_FORMAT = "output_config.format"  # Anthropic's Messages API: {"type": "json_schema", "schema"}
RESPONSES_FORMAT = "text.format"  # the Responses API: {"type": "json_schema", "name", "schema"}


def renamed_text(text: str, field: str) -> str:
    """``text`` with every ``response_format`` path written as ``field`` (its ``.schema`` kept)."""
    return _RESPONSE_FORMAT.sub(lambda m: field + (".schema" if m.group(2) else ""), text)


def renamed(error: GatewayError, field: str) -> GatewayError:
    """``error`` (a copy, of the same class) naming ``field`` where it named ``response_format``."""
    message = renamed_text(error.message, field)
    param = None if error.param is None else renamed_text(error.param, field)
    if message == error.message and param == error.param:
        return error
    out = type(error).__new__(type(error))  # not copy.copy: it would call __init__ with args alone
    out.__dict__.update(error.__dict__)
    out.message, out.param = message, param
    out.args = (message,)
    return out
