"""One normaliser from the tracing conventions onto the domain model.

Understood: OpenTelemetry GenAI (``gen_ai.*``, current and older names), OpenInference (``llm.*``,
``input.value``, ``openinference.span.kind``), OpenLLMetry (``traceloop.*``, ``llm.usage.*``,
``gen_ai.prompt.N.*``), Langfuse (``langfuse.*``) and Pilothouse's own SDK (``pilothouse.*``).

Each span's attributes are read in one pass: a key that maps onto a field goes to its slot (when
several conventions name the same field, the earlier name in ``_ALIASES`` wins), flattened message
keys are grouped by prefix, and everything else is kept as the observation's attributes.

Token usage is normalised so that every token is counted once: ``Usage.input`` excludes cache reads
and writes whether the convention counted them inside its input figure or not.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import orjson

from pilothouse import _speedups
from pilothouse.domain.redaction import REDACTED, names_a_secret, redact_query, redact_url
from pilothouse.domain.traces import (
    USAGE_CLAMPED,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
    bounded_usage,
    token_count,
)
from pilothouse.tracing.otlp import RawSpan
from pilothouse.tracing.vendor_rules import input_excludes_cache, is_vercel_aggregate, logfire_span

log = logging.getLogger("pilothouse.ingest")
_CLAMP_LOG_EVERY_S = 10.0  # a client sending bad counts in every span must not flood the log
_clamp_logged = [0.0]

_sort_native = _speedups.sort_attributes  # _sort_attributes in C, or None where it was not built

_K = ObservationKind
_OPENINFERENCE_KINDS = {
    "LLM": _K.GENERATION,
    "EMBEDDING": _K.EMBEDDING,
    "TOOL": _K.TOOL,
    "RETRIEVER": _K.RETRIEVAL,
    "GUARDRAIL": _K.GUARDRAIL,
    "EVALUATOR": _K.EVALUATOR,
}
_LANGFUSE_KINDS = {
    "generation": _K.GENERATION,
    "embedding": _K.EMBEDDING,
    "tool": _K.TOOL,
    "retriever": _K.RETRIEVAL,
    "guardrail": _K.GUARDRAIL,
    "evaluator": _K.EVALUATOR,
    "event": _K.EVENT,
}
_GENAI_OPERATION_KINDS = {
    "chat": _K.GENERATION,
    "text_completion": _K.GENERATION,
    "generate_content": _K.GENERATION,
    "completion": _K.GENERATION,
    "embeddings": _K.EMBEDDING,
    "embedding": _K.EMBEDDING,
    "execute_tool": _K.TOOL,
}
_TRACELOOP_REQUEST_KINDS = {"chat": _K.GENERATION, "completion": _K.GENERATION, "embedding": _K.EMBEDDING}
_KIND_VALUES = {k.value: k for k in ObservationKind}

# slot -> attribute names, most specific first. A slot whose name starts with "param:" is a model
# parameter; "drop" slots are consumed and not kept.
_SLOT_NAMES: dict[str, tuple[str, ...]] = {
    "request_model": ("gen_ai.request.model", "llm.request.model", "llm.request.model_name"),
    "model": (
        "langfuse.observation.model.name",
        "gen_ai.response.model",
        "llm.response.model",
        "llm.model_name",
        "embedding.model_name",
    ),
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
    "prompt_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
        "llm.usage.prompt_tokens",
        "ai.usage.inputTokens",
        "ai.usage.promptTokens",
    ),
    "completion_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "llm.usage.completion_tokens",
        "ai.usage.outputTokens",
        "ai.usage.completionTokens",
    ),
    "cache_read": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
        "llm.usage.cache_read_input_tokens",
        "ai.usage.cachedInputTokens",
    ),
    "cache_write": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
        "llm.usage.cache_creation_input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
    ),
    "reasoning": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
        "llm.usage.reasoning_tokens",
        "gen_ai.usage.details.reasoning_tokens",
        "ai.usage.reasoningTokens",
    ),
    "total_tokens": (
        "llm.token_count.total",
        "llm.usage.total_tokens",
        "gen_ai.usage.total_tokens",
        "ai.usage.totalTokens",
    ),
    "drop": (
        "input.mime_type",
        "output.mime_type",
    ),
    "usage_details": ("langfuse.observation.usage_details",),
    "usage_raw": ("gen_ai.usage.raw",),
    "kind_pilothouse": ("pilothouse.observation.kind",),
    "kind_langfuse": ("langfuse.observation.type",),
    "kind_openinference": ("openinference.span.kind",),
    "raw_in": (
        "pilothouse.input",
        "langfuse.observation.input",
        "traceloop.entity.input",
        "gen_ai.tool.call.arguments",
        "ai.toolCall.args",
        "ai.prompt.messages",
        "ai.prompt",
    ),
    "raw_out": (
        "pilothouse.output",
        "langfuse.observation.output",
        "traceloop.entity.output",
        "gen_ai.tool.call.result",
        "ai.toolCall.result",
        "ai.response.text",
        "ai.response.toolCalls",
        "ai.response.object",
    ),
    "value_in": ("input.value",),
    "value_out": ("output.value",),
    "genai_in": ("gen_ai.input.messages",),
    "genai_out": ("gen_ai.output.messages",),
    "system": ("gen_ai.system_instructions",),
    "params_oi": ("llm.invocation_parameters",),
    "params_lf": ("langfuse.observation.model.parameters",),
    "param:temperature": ("gen_ai.request.temperature",),
    "param:top_p": ("gen_ai.request.top_p", "llm.top_p"),
    "param:top_k": ("gen_ai.request.top_k",),
    "param:max_tokens": ("gen_ai.request.max_tokens", "llm.request.max_tokens"),
    "param:frequency_penalty": ("gen_ai.request.frequency_penalty", "llm.frequency_penalty"),
    "param:presence_penalty": ("gen_ai.request.presence_penalty", "llm.presence_penalty"),
    "param:stop": ("gen_ai.request.stop_sequences",),
    "param:seed": ("gen_ai.request.seed", "gen_ai.openai.request.seed"),
    "param:n": ("gen_ai.request.choice.count",),
    "param:response_format": ("gen_ai.openai.request.response_format",),
    "param:encoding_formats": ("gen_ai.request.encoding_formats",),
    "param:stream": ("llm.is_streaming", "gen_ai.is_streaming", "gen_ai.request.stream"),
    "ttft_ms": ("pilothouse.ttft_ms", "ai.response.msToFirstChunk"),
    "ttft_s": ("gen_ai.response.time_to_first_chunk", "gen_ai.client.operation.time_to_first_chunk"),
    "ttft_server_s": ("gen_ai.server.time_to_first_token",),
    "completion_start": ("langfuse.observation.completion_start_time",),
    "level": ("langfuse.observation.level",),
    "level_message": ("langfuse.observation.status_message",),
    "prompt_name": ("pilothouse.prompt.name", "langfuse.observation.prompt.name", "traceloop.prompt.key"),
    "prompt_version": (
        "pilothouse.prompt.version",
        "langfuse.observation.prompt.version",
        "traceloop.prompt.version",
        "llm.prompt_template.version",
    ),
    "tags": (
        "langfuse.trace.tags",
        "tag.tags",
        "pilothouse.trace.tags",
        "logfire.tags",
        "ai.telemetry.metadata.tags",
    ),
    "metadata_oi": ("metadata",),
    "metadata_lf": ("langfuse.trace.metadata",),
    "metadata_ph": ("pilothouse.trace.metadata",),
    "environment": ("langfuse.environment", "pilothouse.environment"),
    "release": ("langfuse.release", "pilothouse.release"),
    "trace_name": ("langfuse.trace.name", "pilothouse.trace.name"),
    "trace_input": ("langfuse.trace.input", "pilothouse.trace.input"),
    "trace_output": ("langfuse.trace.output", "pilothouse.trace.output"),
    "user_id": (
        "langfuse.user.id",
        "user.id",
        "enduser.id",
        "traceloop.association.properties.user_id",
        "gen_ai.user",
        "gen_ai.request.user",
        "ai.telemetry.metadata.userId",
    ),
    "session_id": (
        "langfuse.session.id",
        "session.id",
        "gen_ai.conversation.id",
        "traceloop.association.properties.session_id",
        "ai.telemetry.metadata.sessionId",
    ),
}
_ALIASES: dict[str, tuple[str, int]] = {
    key: (slot, rank) for slot, keys in _SLOT_NAMES.items() for rank, key in enumerate(keys)
}
# Read for the kind but also kept as attributes.
_PEEK = frozenset({"gen_ai.operation.name", "llm.request.type", "traceloop.span.kind"})
# Flattened keys (prefix.N.field...) gathered per prefix.
_GROUPS = (
    "llm.input_messages.",
    "llm.output_messages.",
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "langfuse.trace.metadata.",
    "langfuse.observation.metadata.",
    "traceloop.association.properties.",
)
# Two groups of whole attribute names (no prefix is cut), never stored as they came: attributes whose
# name says they hold a secret (an instrumentation's captured `http.request.header.authorization`,
# `x-api-key`, `cookie`, an `api_key` of metadata), stored as "<redacted>"; and attributes that hold
# a URL or its query (OpenTelemetry asks instrumentations to scrub their credentials; not all do),
# stored with the URL's password and its secret-looking query values (api_key=, token=, key=, sig=)
# redacted.
_HIDDEN = "\x00secret"
_URLS = "\x00url"
_URL_KEYS = frozenset({"url.full", "url.original", "http.url", "url.query", "db.connection_string"})


def _int(value: Any) -> int:
    if type(value) is int:
        return value
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        return 0


def _text(value: Any) -> str | None:
    """Text of a value: strings as they are, everything else as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def _json(value: Any) -> Any:
    """Parse JSON text if it is JSON (an object, array or string literal), else return it unchanged."""
    if isinstance(value, str) and value[:1] in ("{", "[", '"'):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def unflatten(flat: dict[str, Any]) -> list[Any]:
    """``{"0.message.role": "user", "0.message.content": "hi"}`` -> ``[{"message": {...}}]``: dotted
    keys become nested dicts, and dicts whose keys are all numbers become lists."""
    root: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = value
    found = _as_list(root)
    return found if isinstance(found, list) else [found]


def _as_list(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _as_list(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _from_parts(message: dict[str, Any]) -> dict[str, Any]:
    """A GenAI-convention message (``parts``: text, tool_call, tool_call_response) in OpenAI's shape."""
    out: dict[str, Any] = {"role": message.get("role", "assistant")}
    texts: list[str] = []
    tool_calls = []
    for part in message.get("parts") or []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("content", "")))
        elif kind == "tool_call":
            arguments = part.get("arguments")
            tool_calls.append(
                {
                    "id": part.get("id"),
                    "type": "function",
                    "function": {"name": part.get("name"), "arguments": _text(arguments) or ""},
                }
            )
        elif kind == "tool_call_response":
            out["tool_call_id"] = part.get("id")
            texts.append(_text(part.get("response")) or "")
        else:
            texts.append(_text(part.get("content", part)) or "")
    out["content"] = "".join(texts) if texts or not tool_calls else None
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out


def _openai_messages(messages: list[Any]) -> list[Any]:
    return [
        _from_parts(m) if isinstance(m, dict) and "parts" in m and "content" not in m else m for m in messages
    ]


def _strip_message(message: Any) -> Any:
    """OpenInference wraps each message in ``{"message": {...}}`` and tool calls in ``tool_call``,
    and may send the content as parts (``contents.N.message_content.text``) instead of text."""
    if isinstance(message, dict) and len(message) == 1 and "message" in message:
        message = message["message"]
    if isinstance(message, dict) and isinstance(message.get("tool_calls"), list):
        message = dict(message)
        message["tool_calls"] = [
            tc.get("tool_call", tc) if isinstance(tc, dict) else tc for tc in message["tool_calls"]
        ]
    if isinstance(message, dict) and isinstance(message.get("contents"), list):
        message = dict(message)
        contents = message.pop("contents")
        if message.get("content") is None:
            texts = [
                str(part["message_content"].get("text", ""))
                for part in contents
                if isinstance(part, dict)
                and isinstance(part.get("message_content"), dict)
                and part["message_content"].get("type") == "text"
            ]
            if texts or not message.get("tool_calls"):
                message["content"] = "".join(texts) if texts else _text(contents)
    return message


_SIMPLE_FIELDS = {"message.role": "role", "message.content": "content", "role": "role", "content": "content"}
_FIRST_FIELDS = {"0." + key: name for key, name in _SIMPLE_FIELDS.items()}


def _messages(flat: dict[str, Any] | None) -> list[Any]:
    if not flat:
        return []
    if len(flat) == 2:  # one message of role and content, the commonest of all
        (k1, v1), (k2, v2) = flat.items()
        f1, f2 = _FIRST_FIELDS.get(k1), _FIRST_FIELDS.get(k2)
        if f1 is not None and f2 is not None and f1 != f2:
            return [{f1: v1, f2: v2}]
    # The common OpenInference shape (N.message.role / N.message.content only) without the general
    # unflattening.
    simple: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        index, _, rest = key.partition(".")
        name = _SIMPLE_FIELDS.get(rest)
        if name is None or not index.isdigit():
            return [_strip_message(m) for m in unflatten(flat) if m is not None]
        message = simple.get(index)
        if message is None:
            message = simple[index] = {}
        message[name] = value
    if len(simple) == 1:
        return [*simple.values()]
    return [simple[i] for i in sorted(simple, key=int)]


def _output_text(messages: Any) -> str | None:
    """Output of a model call: plain text for one text-only answer, else JSON of the messages."""
    if isinstance(messages, dict) and "role" in messages:
        messages = [messages]
    if not isinstance(messages, list):
        return _text(messages)
    if not messages:
        return None
    if len(messages) == 1 and isinstance(messages[0], dict):
        msg = messages[0]
        if isinstance(msg.get("content"), str) and not msg.get("tool_calls"):
            return str(msg["content"])
    return _text(messages[0] if len(messages) == 1 else messages)


def _usage(slots: dict[str, Any], scope: str) -> tuple[Usage, bool]:
    """The span's usage, each count bounded (:func:`token_count`), and whether one was corrected."""
    get = slots.get
    prompt, completion = get("prompt_tokens"), get("completion_tokens")
    raw_usage = get("usage_raw")
    if prompt is None and completion is None:
        for details in (get("usage_details"), raw_usage):
            details = _json(details)
            if isinstance(details, dict) and details:
                return bounded_usage(_langfuse_usage(details))
    read, bad_read = token_count(get("cache_read"))
    write, bad_write = token_count(get("cache_write"))
    total_input, bad_input = token_count(prompt)
    output, bad_output = token_count(completion)
    reasoning, bad_reasoning = token_count(get("reasoning"))
    if raw_usage is not None and not reasoning:  # Logfire: the details only in gen_ai.usage.raw
        details = _json(raw_usage)
        if isinstance(details, dict):
            reasoning = min(output, _langfuse_usage(details).reasoning)
    cached = read + write
    total = get("total_tokens")
    if cached and not input_excludes_cache(
        scope, get("provider"), None if total is None else _int(total), total_input, output, cached
    ):
        total_input = max(0, total_input - cached)  # a total that contradicts the counts: no negative
    usage = Usage(total_input, output, read, write, reasoning)
    return usage, bad_read or bad_write or bad_input or bad_output or bad_reasoning


def _langfuse_usage(details: dict[str, Any]) -> Usage:
    """Langfuse ``usage_details``: either the provider's raw usage (OpenAI's ``prompt_tokens`` with
    nested ``*_details``, which count cached tokens inside the prompt) or Langfuse's own keys, where
    ``input`` excludes the ``input_cached_tokens``-style keys."""
    if "prompt_tokens" in details:
        prompt_details = details.get("prompt_tokens_details") or {}
        completion_details = details.get("completion_tokens_details") or {}
        cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
        reasoning = (
            _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
        )
        return Usage(
            input=max(0, _int(details.get("prompt_tokens")) - cached),
            output=_int(details.get("completion_tokens")),
            cache_read=cached,
            reasoning=reasoning,
        )
    if "input_tokens" in details:  # Anthropic's raw usage: input excludes cache reads and writes
        return Usage(
            input=_int(details.get("input_tokens")),
            output=_int(details.get("output_tokens")),
            cache_read=_int(details.get("cache_read_input_tokens")),
            cache_write=_int(details.get("cache_creation_input_tokens")),
        )
    read = sum(_int(v) for k, v in details.items() if "cache_read" in k or k.endswith("cached_tokens"))
    write = sum(_int(v) for k, v in details.items() if "cache_creation" in k or "cache_write" in k)
    reasoning = sum(_int(v) for k, v in details.items() if "reasoning" in k)
    return Usage(
        input=_int(details.get("input", details.get("prompt_tokens"))),
        output=_int(details.get("output", details.get("completion_tokens"))),
        cache_read=read,
        cache_write=write,
        reasoning=reasoning,
    )


def _kind(slots: dict[str, Any], attrs: dict[str, Any], has_model: bool) -> ObservationKind:
    # Attribute values may be of any type (a list, say): only strings are looked up.
    get = slots.get
    explicit = get("kind_pilothouse")
    if isinstance(explicit, str) and explicit in _KIND_VALUES:
        return _KIND_VALUES[explicit]
    lf = get("kind_langfuse")
    if lf is not None:
        return _LANGFUSE_KINDS.get(str(lf).lower(), _K.SPAN)
    oi = get("kind_openinference")
    if oi is not None:
        return _OPENINFERENCE_KINDS.get(str(oi).upper(), _K.SPAN)
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op in _GENAI_OPERATION_KINDS:
        return _GENAI_OPERATION_KINDS[op]
    request_type = attrs.get("llm.request.type")
    if isinstance(request_type, str) and request_type in _TRACELOOP_REQUEST_KINDS:
        return _TRACELOOP_REQUEST_KINDS[request_type]
    if attrs.get("traceloop.span.kind") == "tool" or attrs.get("ai.operationId") == "ai.toolCall":
        return _K.TOOL
    return _K.GENERATION if has_model else _K.SPAN


_PARAM_SLOTS = frozenset(slot for slot in _SLOT_NAMES if slot.startswith("param:"))


def _parameters(slots: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for slot in ("params_oi", "params_lf"):
        value = slots.get(slot)
        if value is not None:
            value = _json(value)
            if isinstance(value, dict):
                params.update(value)
    if not _PARAM_SLOTS.isdisjoint(slots):
        for slot, value in slots.items():
            if slot.startswith("param:"):
                params.setdefault(slot[6:], value)
    return params


def _iso_to_ns(value: Any) -> int | None:
    value = _json(value)
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return None


_FIRST_CHUNK_EVENTS = frozenset(
    (
        "First Token Stream Event",
        "gen_ai.content.first_token",
        "gen_ai.content.completion.chunk",
        "ai.stream.firstChunk",
    )
)


def _seconds_ns(value: Any) -> int | None:
    """A duration in seconds (a number, or its text) in nanoseconds; None when it is not one."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and 0 <= value < 10_000_000:
        return int(value * 1e9)
    return None


def _ttft(slots: dict[str, Any], raw: RawSpan) -> int | None:
    """Time to the first token: from whichever convention sends it (a duration in ms or s, a
    timestamp, or the first chunk's event). OpenLIT's server TTFT counts for streams only: it sends
    the whole duration for a call that did not stream."""
    ms = slots.get("ttft_ms")
    if isinstance(ms, int | float | str) and (ns := _seconds_ns(ms)) is not None:
        return ns // 1000
    for slot in ("ttft_s", "ttft_server_s"):
        value = slots.get(slot)
        streamed = slot == "ttft_s" or slots.get("param:stream") is True
        if value is not None and streamed and (ns := _seconds_ns(value)) is not None:
            return ns
    start = slots.get("completion_start")
    if start is not None and (start := _iso_to_ns(start)) is not None:
        return max(0, start - raw.start_ns)
    first = min((e.time_ns for e in raw.events if e.name in _FIRST_CHUNK_EVENTS), default=None)
    return None if first is None else max(0, first - raw.start_ns)
    return None


def _io(
    slots: dict[str, Any], groups: dict[str, dict[str, Any]], kind: ObservationKind
) -> tuple[str | None, str | None]:
    in_messages = _messages(groups.get("llm.input_messages.")) or _messages(groups.get("gen_ai.prompt."))
    out_messages = _messages(groups.get("llm.output_messages.")) or _messages(
        groups.get("gen_ai.completion.")
    )
    if not in_messages:
        genai_in = _json(slots.get("genai_in"))
        if isinstance(genai_in, list):
            system = _json(slots.get("system"))
            has_system = any(isinstance(m, dict) and m.get("role") == "system" for m in genai_in)
            if isinstance(system, list) and not has_system:  # OpenLIT sends it in both
                genai_in = [{"role": "system", "parts": system}, *genai_in]
            in_messages = _openai_messages(genai_in)
    if not out_messages:
        genai_out = _json(slots.get("genai_out"))
        if isinstance(genai_out, list):
            out_messages = _openai_messages(genai_out)
    # The raw values (OpenInference's input.value is often the whole request body as JSON) are parsed
    # only when the messages do not already give the text.
    raw_in = slots.get("raw_in", slots.get("value_in"))
    raw_out = slots.get("raw_out", slots.get("value_out"))
    model_call = kind.is_model_call
    in_parsed = False
    if not in_messages and model_call:
        raw_in, in_parsed = _json(raw_in), True
        # a whole request body as input (Langfuse sends {"tools": ..., "messages": [...]} for tool calls)
        if isinstance(raw_in, dict) and isinstance(raw_in.get("messages"), list):
            in_messages = raw_in["messages"]
    if in_messages and (model_call or raw_in is None):
        input_text = _text(in_messages)
    else:
        input_text = _text(raw_in if in_parsed else _json(raw_in))
    if out_messages and (model_call or raw_out is None):
        output_text = _output_text(out_messages)
    elif model_call:
        output_text = _output_text(_json(raw_out))
    else:
        output_text = _text(_json(raw_out))
    return input_text, output_text


# Slots and resource attributes that only _more_trace_attributes reads.
_TRACE_SLOTS = frozenset((
    "tags", "metadata_oi", "metadata_lf", "metadata_ph", "environment", "release", "trace_name",
    "trace_input", "trace_output",
))  # fmt: skip
_TRACE_RESOURCE = frozenset(("deployment.environment.name", "deployment.environment", "service.version"))


def _trace_attributes(
    slots: dict[str, Any], groups: dict[str, dict[str, Any]], resource: dict[str, Any]
) -> TraceAttributes:
    get = slots.get
    user_id, session_id = get("user_id"), get("session_id")
    metadata: dict[str, Any] = {}
    if groups:
        for key, value in (groups.get("langfuse.trace.metadata.") or {}).items():
            metadata[key] = _json(value)
        metadata.update(groups.get("traceloop.association.properties.") or {})
    if not _TRACE_SLOTS.isdisjoint(slots) or not _TRACE_RESOURCE.isdisjoint(resource):
        return _more_trace_attributes(slots, resource, metadata, user_id, session_id)
    # Most spans say at most who and in which session (the cheap path; the same result).
    return TraceAttributes(
        user_id=user_id if user_id is None or type(user_id) is str else _text(user_id),
        session_id=session_id if session_id is None or type(session_id) is str else _text(session_id),
        metadata=metadata,
    )


def _more_trace_attributes(
    slots: dict[str, Any], resource: dict[str, Any], metadata: dict[str, Any], user_id: Any, session_id: Any
) -> TraceAttributes:
    tags = _json(slots.get("tags"))
    slot_metadata: dict[str, Any] = {}
    for slot in ("metadata_oi", "metadata_lf", "metadata_ph"):
        value = _json(slots.get(slot))
        if isinstance(value, dict):
            slot_metadata.update(value)
    environment = slots.get("environment") or resource.get(
        "deployment.environment.name", resource.get("deployment.environment")
    )
    release = slots.get("release") or resource.get("service.version")
    return TraceAttributes(
        name=_text(slots.get("trace_name")),
        user_id=_text(user_id),
        session_id=_text(session_id),
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        metadata={**slot_metadata, **metadata} if slot_metadata else metadata,
        environment=_text(environment),
        release=_text(release),
        input=_text(slots.get("trace_input")),
        output=_text(slots.get("trace_output")),
    )


_SLOT, _DROP, _GROUP, _REST = 0, 1, 2, 3  # the same numbers in _speedups/_attributes.c (ROUTE_*)
_ROUTES_MAX = 20_000  # attribute names remembered with their route (names of user attributes vary)
_ROUTES: dict[str, tuple[int, str, int]] = {}


def _route(key: str) -> tuple[int, str, int]:
    """Where an attribute goes: (_SLOT, slot, rank), (_DROP, "", 0), (_GROUP, prefix, len(prefix)) or
    (_REST, "", 0); remembered per name, as the same few names arrive on every span."""
    hit = _ALIASES.get(key)
    if hit is not None:
        route = (_DROP, "", 0) if hit[0] == "drop" else (_SLOT, *hit)
    elif names_a_secret(key):
        route = (_GROUP, _HIDDEN, 0)
    elif key in _URL_KEYS:
        route = (_GROUP, _URLS, 0)
    else:
        prefix = next((p for p in _GROUPS if key.startswith(p)), None)
        route = (_REST, "", 0) if prefix is None else (_GROUP, prefix, len(prefix))
    if len(_ROUTES) < _ROUTES_MAX:
        _ROUTES[key] = route
    return route


def _sort_attributes(
    attrs: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """One pass: (slots, flattened groups, attributes kept as they are). ``_speedups.sort_attributes``
    does the same in C; this is its reference and the fallback."""
    slots: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    groups: dict[str, dict[str, Any]] = {}
    rest: dict[str, Any] = {}
    routes = _ROUTES
    for key, value in attrs.items():
        route = routes.get(key) or _route(key)
        where = route[0]
        if where == _SLOT:
            if value is None or value == "":
                continue
            slot, rank = route[1], route[2]
            if slot in slots and ranks[slot] <= rank:
                continue  # two conventions name the field: the earlier name in _SLOT_NAMES wins
            slots[slot] = value
            ranks[slot] = rank
        elif where == _REST:
            rest[key] = value
        elif where == _GROUP:
            prefix = route[1]
            group = groups.get(prefix)
            if group is None:
                group = groups[prefix] = {}
            group[key[route[2] :]] = value
    return slots, groups, rest


def normalise_span(raw: RawSpan, project_id: str) -> SpanRecord:
    """Map one decoded span, whatever its convention, onto an observation and trace-level facts."""
    if _sort_native is not None:
        slots, groups, attrs = _sort_native(raw.attributes, _ROUTES, _route)
    else:
        slots, groups, attrs = _sort_attributes(raw.attributes)
    if groups and (_HIDDEN in groups or _URLS in groups):
        _redact(groups, attrs)
    get = slots.get
    request_model = get("request_model")
    model = get("model") or request_model
    kind = _kind(slots, attrs, model is not None)
    input_text, output_text = _io(slots, groups, kind)
    code = raw.status_code
    status = Status.ERROR if code == 2 else Status.OK if code == 1 else Status.UNSET
    status_message = raw.status_message or None
    if get("level") == "ERROR":
        status = Status.ERROR
        status_message = status_message or _text(get("level_message"))
    if status is Status.ERROR and not status_message:
        status_message = _text(attrs.get("error.type"))
    if groups:
        for key, value in (groups.get("langfuse.observation.metadata.") or {}).items():
            attrs["metadata." + key] = _json(value)
    provider, prompt_name, prompt_version = get("provider"), get("prompt_name"), get("prompt_version")
    usage, clamped = _usage(slots, raw.scope)
    if clamped:  # negative, fractional or absurd counts: corrected, and said so on the span
        attrs[USAGE_CLAMPED] = True
        _warn_clamped(raw.name)
    name, start_ns = raw.name, raw.start_ns
    if "ai.operationId" in attrs and is_vercel_aggregate(attrs):  # the usage is on its doGenerate child
        usage = Usage()
    if "logfire.msg" in attrs:
        has_answer = bool(output_text) or not usage.is_empty or status is Status.ERROR
        name, kind, start_ns = logfire_span(name, attrs, kind, start_ns, raw.end_ns, has_answer)
    observation = Observation(
        trace_id=raw.trace_id,
        id=raw.span_id,
        parent_id=raw.parent_id,
        name=name,
        start_ns=start_ns,
        end_ns=raw.end_ns,
        kind=kind,
        status=status,
        status_message=status_message,
        input=input_text,
        output=output_text,
        attributes=attrs,
        provider=provider if provider is None or type(provider) is str else _text(provider),
        request_model=_text(request_model),
        model=model if type(model) is str else _text(model),
        model_parameters=_parameters(slots),
        usage=usage,
        ttft_ns=_ttft(slots, raw),
        prompt_name=None if prompt_name is None else _text(prompt_name),
        prompt_version=None if prompt_version is None else _text(prompt_version),
    )
    return SpanRecord(project_id, observation, _trace_attributes(slots, groups, raw.resource))


def _redact(groups: dict[str, dict[str, Any]], attrs: dict[str, Any]) -> None:
    """Puts the attributes of the two redacting groups back among ``attrs``, redacted."""
    for key in groups.pop(_HIDDEN, ()):
        attrs[key] = REDACTED
    for key, value in groups.pop(_URLS, {}).items():
        if type(value) is str:
            value = redact_query(value, False) if key == "url.query" else redact_url(value, False)
        attrs[key] = value


def _warn_clamped(span_name: str) -> None:
    """Log that a span's token counts were corrected, at most once every 10 s."""
    now = time.monotonic()
    if now - _clamp_logged[0] >= _CLAMP_LOG_EVERY_S:
        _clamp_logged[0] = now
        log.warning(
            "span %r had negative, fractional or absurd token counts: clamped to 0..10,000,000 "
            "(pilothouse.usage.clamped; logged at most every %.0f s)",
            span_name[:200],
            _CLAMP_LOG_EVERY_S,
        )
