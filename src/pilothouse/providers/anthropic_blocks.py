"""Content blocks between Anthropic's Messages API and OpenAI's chat format: text and image blocks,
each kept apart (never joined into one string), both ways."""

from __future__ import annotations

from typing import Any


def openai_parts(blocks: list[Any]) -> list[dict[str, Any]]:
    """OpenAI content parts for Anthropic text and image blocks, each kept apart."""
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif block.get("type") == "image":
            source = block.get("source") or {}
            if source.get("type") == "base64":
                url = f"data:{source.get('media_type')};base64,{source.get('data')}"
            else:
                url = str(source.get("url"))
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def openai_content(parts: Any) -> Any:
    """One text part as a plain string (what every OpenAI-style upstream takes), else the parts."""
    if isinstance(parts, str) or not parts:
        return parts or None
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def anthropic_blocks(content: Any) -> list[dict[str, Any]]:
    """Anthropic text and image blocks for OpenAI content (a string or parts, each kept apart)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url") or "")
            head, _, data = url.partition(";base64,")
            if url.startswith("data:") and data:
                source = {"type": "base64", "media_type": head[5:], "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
    return blocks
