"""Trace data model: traces, observations (spans, generations, ...), usage, cost and scores.

Pure types, no I/O. Times are integers in nanoseconds since the Unix epoch, as OpenTelemetry sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pilothouse.domain.money import Money


class ObservationKind(StrEnum):
    """What an observation stands for. Generations and embeddings are model calls."""

    SPAN = "span"
    GENERATION = "generation"
    EVENT = "event"
    TOOL = "tool"
    RETRIEVAL = "retrieval"
    EMBEDDING = "embedding"
    GUARDRAIL = "guardrail"
    EVALUATOR = "evaluator"

    @property
    def is_model_call(self) -> bool:
        """True for the kinds that call a model and carry usage and cost."""
        return self in _MODEL_CALL_KINDS


_MODEL_CALL_KINDS = frozenset({ObservationKind.GENERATION, ObservationKind.EMBEDDING})


class Status(StrEnum):
    """Outcome of an observation or trace (OpenTelemetry's status codes)."""

    UNSET = "unset"
    OK = "ok"
    ERROR = "error"


@dataclass(slots=True)  # not frozen: made per ingested span, and a frozen one's __init__ is slower
class Usage:
    """Token counts of one model call, each token counted once (treated as a value: never changed).

    ``input`` counts the prompt tokens billed at the full input rate: cache reads and cache writes are
    *not* included (they are ``cache_read`` and ``cache_write``). ``output`` includes ``reasoning``,
    which is a breakdown of it, as OpenAI reports it.
    """

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def input_total(self) -> int:
        """All prompt tokens: uncached input plus cache reads and writes."""
        return self.input + self.cache_read + self.cache_write

    @property
    def total(self) -> int:
        """Every token of the call, counted once."""
        return self.input_total + self.output

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
            self.reasoning + other.reasoning,
        )

    @property
    def is_empty(self) -> bool:
        """True when no token was counted."""
        return self.total == 0 and self.reasoning == 0


MAX_CALL_TOKENS = 10_000_000
"""The most tokens of one kind (input, output, cache reads, ...) one model call may report: above any
model's context or output window. A larger count is clamped to it, and a negative or unreadable one
counts 0, with a warning on the span: a client or upstream cannot record absurd or negative spend."""


def token_count(value: Any) -> tuple[int, bool]:
    """A reported token count as an integer in ``[0, MAX_CALL_TOKENS]``, and whether it had to be
    corrected: ``None`` is 0; an integral float or a numeric string is read (OTLP and JSON encoders
    write both); a negative, fractional, non-finite or unreadable count is 0 or clamped, and flagged."""
    if type(value) is int and 0 <= value <= MAX_CALL_TOKENS:
        return value, False
    if value is None:
        return 0, False
    if isinstance(value, bool):
        return 0, True
    try:
        number = value if isinstance(value, int) else float(value)
    except (TypeError, ValueError, OverflowError):
        return 0, True
    if number != number:  # NaN
        return 0, True
    if number < 0:
        return 0, True
    if number > MAX_CALL_TOKENS:
        return MAX_CALL_TOKENS, True
    whole = int(number)
    return whole, whole != number


def bounded_usage(usage: Usage) -> tuple[Usage, bool]:
    """``usage`` with every count in ``[0, MAX_CALL_TOKENS]`` (see :func:`token_count`), and whether
    any count had to be corrected."""
    fields = (usage.input, usage.output, usage.cache_read, usage.cache_write, usage.reasoning)
    if all(type(v) is int and 0 <= v <= MAX_CALL_TOKENS for v in fields):
        return usage, False
    checked = [token_count(v) for v in fields]
    return Usage(*(v for v, _ in checked)), any(flag for _, flag in checked)


USAGE_CLAMPED = "pilothouse.usage.clamped"
"""The span attribute saying its token counts were out of range (or unreadable) and were corrected."""


@dataclass(slots=True)  # not frozen, as Usage: made per priced span
class Cost:
    """Cost of one model call: line items (input, cache_read, cache_write, output, reasoning, ...) and
    their total, with the version of the price catalogue used (treated as a value: never changed)."""

    items: dict[str, Money]
    price_version: str | None = None
    saved: Money = Money.ZERO  # what caching saved against the full price (provider or gateway cache)
    total: Money = field(init=False, compare=False)  # the sum of the line items (read per span at ingest)

    def __post_init__(self) -> None:
        total = 0
        for item in self.items.values():
            total += item.pico
        self.total = Money(total)


@dataclass(slots=True)
class Observation:
    """One unit of work inside a trace: a span, a model call (generation), a tool call, ...

    Model-call fields (provider, models, usage, cost, ttft, prompt) are empty for other kinds.
    ``input`` and ``output`` hold text or JSON text (chat messages are JSON lists of messages).
    """

    trace_id: str
    id: str
    name: str
    start_ns: int
    end_ns: int
    kind: ObservationKind = ObservationKind.SPAN
    parent_id: str | None = None
    status: Status = Status.UNSET
    status_message: str | None = None
    input: str | None = None
    output: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None
    request_model: str | None = None
    model: str | None = None
    model_parameters: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    cost: Cost | None = None
    ttft_ns: int | None = None
    prompt_name: str | None = None
    prompt_version: str | None = None

    @property
    def duration_ns(self) -> int:
        """Wall time from start to end (0 if the end is missing or before the start)."""
        return max(0, self.end_ns - self.start_ns)

    @property
    def is_root(self) -> bool:
        """True when the observation has no parent within its trace."""
        return self.parent_id is None


# The price version of the $0 cost of a call the gateway turned away before asking any upstream (an
# unknown model, a rate limit, a budget, an invalid request): a refusal, not a model error.
REFUSED_PRICE_VERSION = "refused"

MAX_MODEL_NAME_CHARS = 200  # a stored model (or provider) name is cut to this: clients choose them
MAX_SPAN_NAME_CHARS = 1_000  # and a stored span name to this (a gateway call's is "chat <model>")


def cap_names(observation: Observation) -> None:
    """Cut the observation's model and provider names to :data:`MAX_MODEL_NAME_CHARS` characters and
    its name to :data:`MAX_SPAN_NAME_CHARS`, so that a client cannot store (and make every page, list
    and chart show) names of any length."""
    for name in ("request_model", "model", "provider"):
        value = getattr(observation, name)
        if value is not None and len(value) > MAX_MODEL_NAME_CHARS:
            setattr(observation, name, value[:MAX_MODEL_NAME_CHARS])
    if len(observation.name) > MAX_SPAN_NAME_CHARS:
        observation.name = observation.name[:MAX_SPAN_NAME_CHARS]


_OBSERVATION_TEXTS = (
    "name",
    "parent_id",
    "status_message",
    "input",
    "output",
    "provider",
    "request_model",
    "model",
    "prompt_name",
    "prompt_version",
)
_TRACE_TEXTS = ("name", "user_id", "session_id", "environment", "release", "input", "output")
NUL, NUL_REPLACEMENT = "\x00", "\ufffd"


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (C0, DEL or C1: NUL, ESC, a newline, ...): none
    belongs in a name, where an ESC rewrites a terminal and a NUL fails PostgreSQL's text columns."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def replace_nul_characters(record: SpanRecord) -> None:
    """Put U+FFFD in place of every NUL character (U+0000) in the record's texts (JSON ones keep
    theirs, escaped). PostgreSQL's text columns cannot hold a NUL: one in a span name, a user id or
    a gateway request's refusal message failed the whole batch it was written in, other tenants'
    spans included; SQLite kept it. Now both keep the same text."""
    observation, trace = record.observation, record.trace
    for name in _OBSERVATION_TEXTS:
        value = getattr(observation, name)
        if value is not None and NUL in value:
            setattr(observation, name, value.replace(NUL, NUL_REPLACEMENT))
    for name in _TRACE_TEXTS:
        value = getattr(trace, name)
        if value is not None and NUL in value:
            setattr(trace, name, value.replace(NUL, NUL_REPLACEMENT))
    if any(NUL in tag for tag in trace.tags):
        trace.tags = tuple(tag.replace(NUL, NUL_REPLACEMENT) for tag in trace.tags)


@dataclass(slots=True)
class TraceAttributes:
    """Trace-level facts that one observation carried (user, session, tags, ...); ``None`` = not said."""

    name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    environment: str | None = None
    release: str | None = None
    input: str | None = None
    output: str | None = None


@dataclass(slots=True)
class SpanRecord:
    """What the collector hands to the store for one received span: the project it belongs to, the
    observation and the trace-level facts it carried. ``metered``: a call this server's gateway made
    and billed (its key and cost count toward budgets); spans received from clients never are, whatever
    attributes they carry (docs/costs.md, "What counts toward a budget")."""

    project_id: str
    observation: Observation
    trace: TraceAttributes
    metered: bool = False


@dataclass(frozen=True, slots=True)
class Trace:
    """A whole request through an LLM application, summarised over its observations."""

    id: str
    project_id: str
    name: str | None
    start_ns: int
    end_ns: int
    status: Status
    user_id: str | None = None
    session_id: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    environment: str | None = None
    release: str | None = None
    input: str | None = None
    output: str | None = None
    model: str | None = None
    observation_count: int = 0
    error_count: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: Money | None = None

    @property
    def latency_ms(self) -> float:
        """End-to-end latency in milliseconds."""
        return max(0, self.end_ns - self.start_ns) / 1e6


class ScoreDataType(StrEnum):
    """How a score's value is read."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"


class ScoreSource(StrEnum):
    """Who gave the score."""

    HUMAN = "human"
    JUDGE = "judge"
    CODE = "code"
    ONLINE = "online"


@dataclass(frozen=True, slots=True)
class Score:
    """A judgement on a trace or one of its observations."""

    id: str
    trace_id: str
    name: str
    data_type: ScoreDataType
    value: float | None
    string_value: str | None = None
    observation_id: str | None = None
    source: ScoreSource = ScoreSource.CODE
    comment: str | None = None
    created_ns: int = 0
    author: str | None = None  # who wrote it (key:NAME, admin, a reviewer); None: no caller, or older


@dataclass(frozen=True, slots=True)
class Project:
    """A tenant: every trace, key and score belongs to exactly one project."""

    id: str
    name: str
