"""Native Anthropic pass-through: a ``/v1/messages`` request served by an Anthropic deployment goes
upstream as the client sent it (cache_control, thinking, top_k, documents, output_config, ...), and
its answer and stream events come back unchanged. The gateway itself still works on the OpenAI
shape: the native body rides along in the OpenAI request under :data:`NATIVE`, and the native answer
(or each stream event) rides along in the OpenAI response (or chunk) under the same key. Providers
that cannot take it never see it (the router strips it), so they get the translated request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

NATIVE = "_anthropic_native"  # never a field of OpenAI's or Anthropic's API
FORWARDED_HEADERS = ("anthropic-beta",)  # client headers an Anthropic upstream must see too
MAX_HEADER_CHARS = 1000


def native_request(body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """What rides along in the OpenAI request: the client's Messages body and the headers to forward."""
    forwarded = {name: headers[name][:MAX_HEADER_CHARS] for name in FORWARDED_HEADERS if headers.get(name)}
    return {"body": body, "headers": forwarded}


def without_native(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` without its native body (for a provider that speaks only the OpenAI shape)."""
    if NATIVE not in request:
        return request
    return {k: v for k, v in request.items() if k != NATIVE}


def upstream_body(native: Mapping[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """The body sent upstream: the client's, with the deployment's model and the stream flag."""
    return {**native["body"], "model": model, "stream": stream}


def tag_chunks(
    chunks: list[dict[str, Any]], event: dict[str, Any], template: dict[str, Any]
) -> list[dict[str, Any]]:
    """``chunks`` (the OpenAI view of one upstream ``event``) with the event carried on the first;
    the others carry None (nothing more to send). An event with no OpenAI view rides on an empty
    chunk made from ``template``."""
    if not chunks:
        return [{**template, "choices": [], NATIVE: event}]
    return [{**chunk, NATIVE: event if i == 0 else None} for i, chunk in enumerate(chunks)]


def message_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream events of a whole Anthropic ``message`` (a cached answer replayed as a stream):
    every block, thinking and its signature included, as Anthropic streams it."""
    reported = message.get("usage")
    usage: dict[str, Any] = reported if isinstance(reported, dict) else {}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**start, "usage": {**usage, "output_tokens": 0}}}
    ]
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            opened, deltas = {**block, "text": ""}, [{"type": "text_delta", "text": block.get("text", "")}]
        elif kind == "thinking":
            opened = {**block, "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block.get("thinking", "")},
                {"type": "signature_delta", "signature": block.get("signature", "")},
            ]
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            opened, deltas = {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": arguments}]
        else:  # redacted thinking, server tools' blocks: whole in their start event
            opened, deltas = block, []
        events.append({"type": "content_block_start", "index": index, "content_block": opened})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    events.append(
        {"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage.get("output_tokens", 0)}}
    )
    events.append({"type": "message_stop"})
    return events
