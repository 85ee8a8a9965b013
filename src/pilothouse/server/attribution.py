"""Who and what a gateway call is for, from its headers and its body: the end user, the session
(``x-pilothouse-session-id``), tags (``x-pilothouse-tags``, comma-separated, and ``metadata.tags`` in
the body, a list or a comma-separated string) and metadata key/values (the body's ``metadata``). Tags
count for budgets and reports by tag; the session and metadata are recorded on the trace. Bounded:
a client cannot make a trace carry megabytes of tags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

USER_HEADER = "x-pilothouse-user"
TAGS_HEADER = "x-pilothouse-tags"  # comma-separated; budgets and reports by tag use them
SESSION_HEADER = "x-pilothouse-session-id"
MAX_TAGS = 32
MAX_METADATA_KEYS = 32
MAX_CHARS = 200  # a tag, a session id, a metadata key or value


@dataclass(slots=True)
class Attribution:
    """What a call's headers and body say about it."""

    tags: tuple[str, ...] = ()
    session_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _tags(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    return [item.strip()[:MAX_CHARS] for item in items if isinstance(item, str) and item.strip()]


def attribution(headers: Mapping[str, str], body: Any) -> Attribution:
    """The tags (headers first, then the body's, each once), session and metadata of a call."""
    metadata = body.get("metadata") if isinstance(body, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}
    tags = list(dict.fromkeys(_tags(headers.get(TAGS_HEADER, "")) + _tags(metadata.get("tags"))))
    pairs = {
        str(key)[:MAX_CHARS]: value[:MAX_CHARS]
        for key, value in list(metadata.items())[:MAX_METADATA_KEYS]
        if key != "tags" and isinstance(value, str)
    }
    session = headers.get(SESSION_HEADER, "").strip()[:MAX_CHARS] or None
    return Attribution(tuple(tags[:MAX_TAGS]), session, pairs)


def without_tags(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without ``metadata.tags`` (the gateway's, not the upstream's: OpenAI takes only string
    metadata values, and only with ``store``)."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or "tags" not in metadata:
        return body
    rest = {k: v for k, v in metadata.items() if k != "tags"}
    out = {k: v for k, v in body.items() if k != "metadata"}
    if rest:
        out["metadata"] = rest
    return out
