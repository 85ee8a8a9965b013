"""The one span builder of a model call, wherever it happens (the gateway's HTTP surfaces, in-process
eval calls, judges, cascade steps): :class:`CallSpan` collects what is learned about the call and turns
it into one generation (or embedding) record: request, response, usage, cost, TTFT, latency, attempts,
deployment, key and end user. An incoming W3C ``traceparent`` nests it under the caller's trace."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from pilothouse.domain.ids import new_span_id, new_trace_id
from pilothouse.domain.money import Money
from pilothouse.domain.traces import (
    MAX_CALL_TOKENS,
    REFUSED_PRICE_VERSION,
    Cost,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
    token_count,
)
from pilothouse.gateway.router import Attempt

WORST_CASE_PRICE_VERSION = "worst-case"  # the cost of a stream the server stopped during: its hold
INTERRUPTED = (
    "interrupted: the server stopped before the stream ended; its worst-case cost (the budget hold) "
    "is recorded"
)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_PARAMETERS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "response_format",
    "tool_choice",
    "stream",
)


def parse_traceparent(header: str | None) -> tuple[str, str | None]:
    """(trace id, parent span id) from a W3C traceparent header, or a new trace id and no parent."""
    if header:
        match = _TRACEPARENT.match(header.strip().lower())
        if match and match.group(1) != "0" * 32 and match.group(2) != "0" * 16:
            return match.group(1), match.group(2)
    return new_trace_id(), None


def usage_from_openai(usage: Any) -> Usage:
    """Usage of an OpenAI ``usage`` object, each token once (``prompt_tokens`` include cached ones).
    Counts are read with :func:`~pilothouse.domain.traces.token_count` (negative, fractional or absurd
    ones corrected): see :func:`checked_usage_from_openai` to learn whether they were."""
    return checked_usage_from_openai(usage)[0]


def checked_usage_from_openai(usage: Any) -> tuple[Usage, bool]:
    """:func:`usage_from_openai`, and whether a count was out of range or unreadable (and corrected)."""
    if not usage:
        return Usage(), False
    if type(usage) is not dict:
        return Usage(), True
    details = usage.get("prompt_tokens_details") or _NO_DETAILS
    output_details = usage.get("completion_tokens_details") or _NO_DETAILS
    if type(details) is not dict or type(output_details) is not dict:
        return Usage(), True
    raw: tuple[Any, ...] = (
        usage.get("prompt_tokens") or 0,
        details.get("cached_tokens") or 0,
        details.get("cache_write_tokens") or 0,  # Anthropic upstreams, translated
        usage.get("completion_tokens") or 0,
        output_details.get("reasoning_tokens") or 0,
    )
    corrected = False
    for value in raw:  # the usual case: plain integers in range, read as they are
        if type(value) is not int or not 0 <= value <= MAX_CALL_TOKENS:
            corrected = True
            break
    if corrected:
        checked = [token_count(value) for value in raw]
        raw = tuple(value for value, _ in checked)
        corrected = any(flag for _, flag in checked)
    prompt, cached, written, output, reasoning = raw
    return Usage(max(0, prompt - cached - written), output, cached, written, reasoning), corrected


_NO_DETAILS: dict[str, Any] = {}


@dataclass
class CallSpan:
    """What is learned about one call, turned into a span record when it ends."""

    project_id: str
    operation: str  # chat | embeddings | cache-verify | the kind of a non-model call (eval target)
    request: dict[str, Any]
    key_id: str | None
    user_id: str | None
    trace_id: str
    parent_id: str | None
    span_id: str = field(default_factory=new_span_id)
    start_ns: int = field(default_factory=time.time_ns)
    started: float = field(default_factory=time.perf_counter)
    attempts: list[Attempt] = field(default_factory=list)
    first_token_at: float | None = None
    ended: float | None = None  # set by finish(); a record made later keeps the call's own latency
    tags: tuple[str, ...] = ()
    cache: str | None = None  # "hit" or "miss" when the response cache is on
    extra: dict[str, Any] = field(default_factory=dict)  # more span attributes (a cascade's steps, ...)
    reservation: Any = None  # the budget hold (pilothouse.gateway.budgets.Reservation), if any
    name: str | None = None  # the span's name; default "<operation> <requested model>"
    kind: ObservationKind | None = None  # default: generation (embedding for embeddings)
    trace: TraceAttributes | None = None  # trace-level facts; default the end user and tags
    prompt: tuple[str, int] | None = None  # the registry's prompt (name, version) the request used
    prompt_variables: dict[str, Any] | None = None  # the variables it was rendered with (curation reads them)
    session_id: str | None = None  # the client's session (x-pilothouse-session-id)
    metadata: dict[str, str] = field(default_factory=dict)  # the request's metadata key/values

    def first_token(self) -> None:
        """Mark the time to first token (once)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def finish(self) -> None:
        """Mark the end of the call (once), for a record made after the response was sent."""
        if self.ended is None:
            self.ended = time.perf_counter()

    def refused_cost(self) -> Cost | None:
        """$0 for a call the gateway turned away before asking any upstream (an invalid request, an
        unknown model, a rate limit or a budget): nothing was spent, whatever the model's price. None
        (unknown, never 0) once an upstream was asked and no cost is known."""
        if self.attempts:
            return None
        return Cost({"input": Money.ZERO, "output": Money.ZERO}, REFUSED_PRICE_VERSION)

    def interrupted_record(self, provider: str, deployment: str, worst: Money | None) -> SpanRecord:
        """The record of a stream that has just started, written as if the server stopped now: an
        error saying it was interrupted, costing ``worst`` (its budget hold; None: unknown), and
        ``gateway.interrupted``. The durable mode keeps it on the spool, where the call's own record
        (the same span) supersedes it when the stream ends."""
        cost = None if worst is None else Cost({"worst_case": worst}, WORST_CASE_PRICE_VERSION)
        record = self.record(
            status=Status.ERROR, provider=provider, deployment=deployment, cost=cost, error=INTERRUPTED
        )
        record.observation.attributes["gateway.interrupted"] = True
        return record

    def record_answer(
        self,
        response: dict[str, Any],
        provider: str | None,
        deployment: str | None,
        *,
        usage: Usage | None = None,
        cost: Cost | None = None,
        output: str | None = None,
        status: Status = Status.OK,
        error: str | None = None,
    ) -> SpanRecord:
        """The generation for a call an upstream (or the cache) answered with ``response``; the output
        defaults to the response's text."""
        return self.record(
            status=status,
            served_model=response.get("model"),
            provider=provider,
            deployment=deployment,
            output=output_text(response) if output is None else output,
            usage=usage,
            cost=cost,
            error=error,
        )

    def record(
        self,
        *,
        status: Status,
        served_model: str | None = None,
        provider: str | None = None,
        deployment: str | None = None,
        output: str | None = None,
        usage: Usage | None = None,
        cost: Cost | None = None,
        error: str | None = None,
        http_status: int = 200,
    ) -> SpanRecord:
        """The span of this call (a refused call costs $0: :meth:`refused_cost`)."""
        kind = self.kind or (
            ObservationKind.EMBEDDING if self.operation == "embeddings" else ObservationKind.GENERATION
        )
        model_call = kind.is_model_call
        if cost is None and status is Status.ERROR and model_call:
            cost = self.refused_cost()
        ended = time.perf_counter() if self.ended is None else self.ended
        elapsed_ns = int((ended - self.started) * 1e9)
        requested = self.request.get("model")
        attributes: dict[str, Any] = {}
        if model_call:
            attributes["gateway.http_status"] = http_status
            attributes["gateway.attempts"] = [a.as_dict() for a in self.attempts]
        if deployment:
            attributes["gateway.deployment"] = deployment
        if self.key_id:
            attributes["gateway.key_id"] = self.key_id
        if self.cache:
            attributes["gateway.cache"] = self.cache
        attributes.update(self.extra)
        if self.request.get("tools"):
            attributes["gen_ai.request.tools"] = self.request["tools"]
        if self.prompt is not None:
            attributes["pilothouse.prompt.name"] = self.prompt[0]
            attributes["pilothouse.prompt.version"] = str(self.prompt[1])
            if self.prompt_variables:
                attributes["pilothouse.prompt.variables"] = self.prompt_variables
        if self.name is not None:
            name = self.name
        else:
            name = f"{self.operation} {requested}" if isinstance(requested, str) else self.operation
        observation = Observation(
            trace_id=self.trace_id,
            id=self.span_id,
            parent_id=self.parent_id,
            name=name,
            kind=kind,
            start_ns=self.start_ns,
            end_ns=self.start_ns + elapsed_ns,
            status=status,
            status_message=error,
            input=_input_text(self.request)
            if model_call
            else orjson.dumps(self.request, default=str).decode(),
            output=output,
            attributes=attributes,
            provider=provider,
            request_model=requested if isinstance(requested, str) else None,
            model=served_model or (requested if isinstance(requested, str) else None),
            model_parameters={k: self.request[k] for k in _PARAMETERS if k in self.request},
            usage=usage or Usage(),
            cost=cost,
            ttft_ns=None if self.first_token_at is None else int((self.first_token_at - self.started) * 1e9),
            prompt_name=attributes.get("pilothouse.prompt.name"),
            prompt_version=attributes.get("pilothouse.prompt.version"),
        )
        # each record its own trace facts: the normaliser and the batch writer may change them
        trace = (
            replace(self.trace)
            if self.trace
            else TraceAttributes(
                user_id=self.user_id, session_id=self.session_id, tags=self.tags, metadata=dict(self.metadata)
            )
        )
        return SpanRecord(self.project_id, observation, trace)


def _input_text(request: dict[str, Any]) -> str | None:
    value = request.get("messages", request.get("input"))
    if value is None:
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def output_text(response: dict[str, Any]) -> str | None:
    """The answer of an OpenAI chat completion: the text of a single text answer, else JSON of the
    assistant messages (tool calls, several choices)."""
    messages = [c.get("message") or {} for c in response.get("choices") or []]
    if (
        len(messages) == 1
        and isinstance(messages[0].get("content"), str)
        and not messages[0].get("tool_calls")
    ):
        return str(messages[0]["content"])
    if not messages:
        return None
    return orjson.dumps(messages[0] if len(messages) == 1 else messages).decode()


class StreamAssembler:
    """Rebuilds the whole answer and the usage from the chunks of a stream."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        """Take in one ``chat.completion.chunk``."""
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            state = self.choices.setdefault(int(choice.get("index", 0)), {"role": "assistant", "content": ""})
            delta = choice.get("delta") or {}
            if delta.get("content"):
                state["content"] += delta["content"]
            for call in delta.get("tool_calls") or []:
                calls = state.setdefault("tool_calls", {})
                entry = calls.setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                entry["id"] = call.get("id") or entry["id"]
                function = call.get("function") or {}
                entry["function"]["name"] += function.get("name") or ""
                entry["function"]["arguments"] += function.get("arguments") or ""

    def response(self) -> dict[str, Any]:
        """The equivalent non-streamed response (for the trace)."""
        choices = []
        for index, state in sorted(self.choices.items()):
            message = dict(state)
            if "tool_calls" in message:
                message["tool_calls"] = [v for _, v in sorted(message["tool_calls"].items())]
            choices.append({"index": index, "message": message})
        return {"model": self.model, "choices": choices, "usage": self.usage}
