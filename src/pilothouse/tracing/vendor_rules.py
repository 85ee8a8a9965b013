"""Rules for what one instrumentation does its own way, found in its real payloads (tests/corpus).

- Cache tokens inside the input count or not: most conventions (OpenAI's usage, the GenAI
  convention, OpenInference, the Anthropic SDK's own spans) count cache reads and writes inside
  the input figure. Anthropic's API does not, and instrumentations that copy its raw
  ``input_tokens`` send that: :data:`RAW_INPUT_SCOPES`.
- Logfire: span names are templates (``Chat Completion with {request_data[model]!r}``), the
  formatted name is ``logfire.msg``. A streamed call is two spans: the request span (no answer, no
  usage) and a zero-length ``log`` span at the stream's end with the answer, the usage and the
  stream's ``duration``. The log span becomes the generation (spanning the stream), the request span
  a plain span, so the call is one generation.
- Vercel AI SDK: ``ai.generateText`` (``streamText``, ...) wraps one ``ai.generateText.doGenerate``
  span per model call; both carry ``ai.usage.*``. The outer one sums its steps, so only the
  ``do*`` spans count.
"""

from __future__ import annotations

from typing import Any

from pilothouse.domain.traces import ObservationKind

# Instrumentation scope -> the providers whose raw input count (cache excluded) it copies.
RAW_INPUT_SCOPES: dict[str, frozenset[str]] = {
    "openlit.instrumentation.anthropic": frozenset({"anthropic"}),
}


def input_excludes_cache(
    scope: str, provider: Any, total: int | None, input_: int, output: int, cached: int
) -> bool:
    """Whether a span's input token count leaves out the ``cached`` (read + written) tokens.

    A total, when sent, decides (``input + output`` or ``input + output + cached``); else the
    instrumentation's convention for the provider (:data:`RAW_INPUT_SCOPES`); else the count is
    taken as inclusive unless it is smaller than the cached part."""
    if total is not None:
        if total == input_ + output + cached:
            return True
        if total == input_ + output:
            return False
    providers = RAW_INPUT_SCOPES.get(scope)
    if providers is not None and provider in providers:
        return True
    return input_ < cached


def logfire_span(
    name: str, attrs: dict[str, Any], kind: ObservationKind, start_ns: int, end_ns: int, has_answer: bool
) -> tuple[str, ObservationKind, int]:
    """(the name, the kind, the start) of a Logfire span: ``logfire.msg`` where the name is the
    template (``logfire.msg_template``); other instrumentations built on Logfire's API (pydantic-ai)
    give real names and keep them."""
    msg = attrs.get("logfire.msg")
    if isinstance(msg, str) and msg and name == attrs.get("logfire.msg_template"):
        name = msg
    if kind is not ObservationKind.GENERATION:
        return name, kind, start_ns
    span_type = attrs.get("logfire.span_type")
    if span_type == "log":  # the end of a stream: it carries the answer; make it cover the stream
        duration = attrs.get("duration")
        if isinstance(duration, int | float) and 0 <= duration < 86_400:
            start_ns = max(0, end_ns - int(duration * 1e9))
        return name, kind, start_ns
    if span_type == "span" and not has_answer:  # a stream's request span: the log span is the call
        return name, ObservationKind.SPAN, start_ns
    return name, kind, start_ns


_VERCEL_CALLS = (".doGenerate", ".doStream", ".doEmbed")


def is_vercel_aggregate(attrs: dict[str, Any]) -> bool:
    """Whether a span is a Vercel AI SDK operation whose usage sums its model calls' (not one call)."""
    operation = attrs.get("ai.operationId")
    return (
        isinstance(operation, str) and operation.startswith("ai.") and not operation.endswith(_VERCEL_CALLS)
    )
