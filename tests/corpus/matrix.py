#!/usr/bin/env python3
"""The instrumentation x field matrix: what the normaliser makes of each instrumentation's payloads.

Each cell is measured on the corpus (``payloads/``): the normaliser runs on the real export requests
and the cell is OK when the field came out right (the value the simulated upstream sent), or n.a.
with the reason from :data:`NOT_AVAILABLE` when the instrumentation does not send it. A cell that
is neither is a FAIL. ``tests/unit/test_corpus_matrix.py`` asserts that no cell fails, that every n.a.
is still true (the field is still missing) and that docs/compatibility.md has this script's
output between its markers::

    .venv/bin/python tests/corpus/matrix.py --write    # rewrites that section of docs/compatibility.md
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

from pilothouse.domain.traces import Observation, ObservationKind, SpanRecord, Status
from pilothouse.tracing.conventions import normalise_span
from pilothouse.domain.duplicates import count_calls_once
from pilothouse.tracing.otlp import decode_protobuf

PAYLOADS = Path(__file__).resolve().parent / "payloads"
ANSWER = "Hello from the simulated upstream!"
TOOL_ANSWER = "It is 18 degrees Celsius and sunny in Paris."
OPENAI = {"model": "gpt-4o-mini-2024-07-18", "total": 32, "read": 8, "write": 0, "reasoning": 5}
ANTHROPIC = {"model": "claude-sonnet-4-5-20250929", "total": 44, "read": 8, "write": 4, "reasoning": 0}

# instrumentation -> (package as the docs name it, upstream it called)
INSTRUMENTATIONS: dict[str, tuple[str, dict]] = {
    "otel-genai": ("OpenTelemetry openai-v2 2.4b0 (default content setting)", OPENAI),
    "otel-genai-latest": ("OpenTelemetry openai-v2 2.4b0 (latest experimental, span_and_event)", OPENAI),
    "otel-genai-v1": ("OpenTelemetry openai-v2 2.1b0 (v1.30 conventions, content in logs)", OPENAI),
    "openinference": ("OpenInference OpenAI 0.1.66", OPENAI),
    "openinference-langchain": ("OpenInference LangChain 0.1.80 (langchain-openai 1.8.1)", OPENAI),
    "traceloop": ("OpenLLMetry / Traceloop 0.62.4", OPENAI),
    "langfuse": ("Langfuse SDK 5.0.4", OPENAI),
    "anthropic-sdk": ("Anthropic SDK 2.17.0 own telemetry", ANTHROPIC),
    "openinference-anthropic": ("OpenInference Anthropic 3.1.0", ANTHROPIC),
    "anthropic-dual": ("Anthropic SDK + OpenInference Anthropic on the same calls", ANTHROPIC),
    "pydantic-ai": ("pydantic-ai 2.78.0 own OTel", OPENAI),
    "logfire": ("Logfire 5.4.0 instrument_openai", OPENAI),
    "openlit": ("OpenLIT 1.45.0 (openai)", OPENAI),
    "openlit-anthropic": ("OpenLIT 1.45.0 (anthropic)", ANTHROPIC),
    "vercel-ai": ("Vercel AI SDK 6.0.333 (Node, experimental_telemetry)", OPENAI),
}
FIELDS = (
    "model",
    "input messages",
    "output",
    "tool calls",
    "input/output tokens",
    "cache read",
    "cache write",
    "reasoning tokens",
    "TTFT (stream)",
    "errors",
    "counted once",
    "user",
    "session",
    "tags",
)
_NO_CONTENT = "sends no message content in this setting (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true is not valid for util-genai)"
_NO_CACHE = "does not send cached-token counts"
_NO_REASONING = "does not send reasoning-token counts"
_NO_TTFT = "sends no time-to-first-token (no attribute, event or timestamp)"
_ANTHROPIC_NO_REASONING = "the simulated Anthropic upstream sends no thinking tokens"
_NO_WRITE_OPENAI = "OpenAI usage has no cache-write count"
NOT_AVAILABLE: dict[tuple[str, str], str] = {
    ("otel-genai", "input messages"): _NO_CONTENT,
    ("otel-genai", "output"): _NO_CONTENT,
    ("otel-genai", "tool calls"): _NO_CONTENT,
    (
        "otel-genai-v1",
        "input messages",
    ): "message content goes to OTel log events (/v1/logs), not to the span",
    ("otel-genai-v1", "output"): "message content goes to OTel log events (/v1/logs), not to the span",
    ("otel-genai-v1", "tool calls"): "message content goes to OTel log events (/v1/logs), not to the span",
    **{(i, "cache read"): _NO_CACHE for i in ("otel-genai", "otel-genai-latest", "otel-genai-v1")},
    **{(i, "reasoning tokens"): _NO_REASONING for i in ("otel-genai", "otel-genai-latest", "otel-genai-v1")},
    **{(i, "TTFT (stream)"): _NO_TTFT for i in ("otel-genai", "otel-genai-latest", "otel-genai-v1")},
    ("openinference-anthropic", "TTFT (stream)"): _NO_TTFT,
    ("openinference-langchain", "TTFT (stream)"): _NO_TTFT,
    ("logfire", "TTFT (stream)"): _NO_TTFT,
    ("openlit", "reasoning tokens"): _NO_REASONING,
    (
        "openlit-anthropic",
        "errors",
    ): "its error span has no GenAI attribute (no model, no operation): an ERROR span, not a generation",
    **{
        (i, "user"): "the scenarios set no end user (the Anthropic ones send metadata.user_id, which no package records)"
        for i in INSTRUMENTATIONS
        if i != "vercel-ai"
    },
    **{
        (i, "session"): "the scenarios set no session and the package adds none"
        for i in INSTRUMENTATIONS
        if i not in ("pydantic-ai", "vercel-ai")
    },
    **{
        (i, "tags"): "the scenarios set no tags and the package adds none"
        for i in INSTRUMENTATIONS
        if i not in ("logfire", "vercel-ai")
    },
    **{
        (i, "cache write"): _NO_WRITE_OPENAI
        for i, (_, upstream) in INSTRUMENTATIONS.items()
        if upstream is OPENAI
    },
    **{
        (i, "reasoning tokens"): _ANTHROPIC_NO_REASONING
        for i, (_, upstream) in INSTRUMENTATIONS.items()
        if upstream is ANTHROPIC
    },
}


@cache
def load(instrumentation: str, scenario: str) -> list[SpanRecord]:
    """The records of one scenario as the collector makes them (one export request at a time)."""
    records: list[SpanRecord] = []
    for f in sorted((PAYLOADS / instrumentation).glob(f"{scenario}*.pb")):
        if f.name.endswith(".logs.pb") or f.stem.split("-")[0] != scenario:
            continue
        batch = [normalise_span(raw, "p") for raw in decode_protobuf(f.read_bytes())]
        count_calls_once(batch)
        records += batch
    return records


def calls(records: list[SpanRecord]) -> list[Observation]:
    """The model calls, in time order, that carry usage (a duplicate's is counted elsewhere)."""
    found = [r.observation for r in records if r.observation.kind.is_model_call]
    return sorted(found, key=lambda o: o.start_ns)


def counted(records: list[SpanRecord]) -> list[Observation]:
    return [o for o in calls(records) if not o.usage.is_empty]


def _chat(inst: str) -> Observation:
    return counted(load(inst, "chat"))[-1]


def check(inst: str, field: str) -> bool:
    """Whether the normaliser got ``field`` right on ``inst``'s payloads."""
    up = INSTRUMENTATIONS[inst][1]
    return CHECKS[field](inst, up)


def _messages(inst: str, up: dict) -> bool:
    return all("Say hello." in (o.input or "") for o in calls(load(inst, "chat")))


def _tools(inst: str, up: dict) -> bool:
    found = counted(load(inst, "chat_tools"))
    return len(found) == 2 and "get_weather" in (found[0].output or "") and found[1].output == TOOL_ANSWER


def _tokens(inst: str, up: dict) -> bool:
    u = _chat(inst).usage
    return u.output == 12 and u.total == up["total"]


def _ttft(inst: str, up: dict) -> bool:
    found = [o for o in calls(load(inst, "chat_stream")) if o.ttft_ns is not None]
    return bool(found) and all(0 < o.ttft_ns <= o.duration_ns for o in found if o.ttft_ns is not None)


def _errors(inst: str, up: dict) -> bool:
    failed = [o for o in calls(load(inst, "error")) if o.status is Status.ERROR]
    return bool(failed) and all(o.status_message and o.kind is ObservationKind.GENERATION for o in failed)


def _once(inst: str, up: dict) -> bool:
    """Each scenario's model calls sum to the upstream's usage once per HTTP call."""
    for scenario, n in (("chat", 1), ("chat_stream", 1), ("chat_tools", 2)):
        total = sum(o.usage.total for o in calls(load(inst, scenario)))
        if total != n * up["total"]:
            return False
    return True


def _trace(inst: str) -> list[SpanRecord]:
    return load(inst, "chat")


CHECKS: dict[str, Callable[[str, dict], bool]] = {
    "user": lambda inst, up: any(r.trace.user_id for r in _trace(inst)),
    "session": lambda inst, up: any(r.trace.session_id for r in _trace(inst)),
    "tags": lambda inst, up: any(r.trace.tags for r in _trace(inst)),
    "model": lambda inst, up: _chat(inst).model == up["model"],
    "input messages": _messages,
    "output": lambda inst, up: _chat(inst).output == ANSWER,
    "tool calls": _tools,
    "input/output tokens": _tokens,
    "cache read": lambda inst, up: _chat(inst).usage.cache_read == up["read"],
    "cache write": lambda inst, up: up["write"] > 0 and _chat(inst).usage.cache_write == up["write"],
    "reasoning tokens": lambda inst, up: (
        up["reasoning"] > 0 and _chat(inst).usage.reasoning == up["reasoning"]
    ),
    "TTFT (stream)": _ttft,
    "errors": _errors,
    "counted once": _once,
}


def cell(inst: str, field: str, notes: list[str] | None = None) -> str:
    """``OK``, ``n.a. [n]`` (the reason is note n) or ``FAIL`` (a field that came out wrong or
    missing, or one listed as n.a. that works)."""
    ok = check(inst, field)
    reason = NOT_AVAILABLE.get((inst, field))
    if ok:
        return "OK" if reason is None else "FAIL (works, but listed as n.a.)"
    if reason is None:
        return "FAIL"
    if notes is None:
        return f"n.a. ({reason})"
    if reason not in notes:
        notes.append(reason)
    return f"n.a. [{notes.index(reason) + 1}]"


def render() -> str:
    """docs/compatibility.md's instrumentation matrix."""
    lines = [
        "## Instrumentations x fields (OTLP collector)",
        "",
        "Generated by `tests/corpus/matrix.py` from the OTLP corpus in `tests/corpus/payloads/` (real",
        "instrumentation packages, pinned, run against simulated upstreams by `tests/corpus/capture.py`).",
        "Each cell is what the collector's normaliser makes of those real export requests: **OK** when the",
        "field came out as the upstream sent it, **n.a.** when the instrumentation does not send it (the",
        "reason says why). `tests/unit/test_corpus_matrix.py` checks every cell and that this page is current.",
        "Do not edit by hand: `.venv/bin/python tests/corpus/matrix.py --write`.",
        "",
        "| instrumentation | " + " | ".join(FIELDS) + " |",
        "|---|" + "---|" * len(FIELDS),
    ]
    notes: list[str] = []
    for inst, (name, _) in INSTRUMENTATIONS.items():
        lines.append(f"| {name} (`{inst}`) | " + " | ".join(cell(inst, f, notes) for f in FIELDS) + " |")
    lines += ["", "Why a cell is n.a.:", ""]
    lines += [f"{i}. {note}" for i, note in enumerate(notes, 1)]
    lines += ["", "Fields:", ""]
    lines += [f"- **{f}**: {FIELD_DOCS[f]}" for f in FIELDS]
    return "\n".join(lines) + "\n"


FIELD_DOCS = {
    "model": "the response model of a chat call (`gpt-4o-mini-2024-07-18` / `claude-sonnet-4-5-20250929`)",
    "input messages": "the request's messages are the generation's input",
    "output": "the answer text is the generation's output",
    "tool calls": "a tool-call answer shows the call, and the follow-up call's answer is its text",
    "input/output tokens": "output 12 and every token once (OpenAI 32 = 20 prompt + 12; Anthropic 44 = 20 + 8 read + 4 write + 12)",
    "cache read": "cache-read input tokens (8)",
    "cache write": "cache-write (creation) input tokens (4, Anthropic only)",
    "reasoning tokens": "reasoning tokens inside the output (5, OpenAI upstream only)",
    "TTFT (stream)": "time to first token of a streamed call, within the span",
    "errors": "the failed call is an ERROR generation with a message",
    "counted once": "each scenario's calls sum to the upstream usage once per HTTP call (two spans of one call count once)",
    "user": "the trace's user (Vercel: `ai.telemetry.metadata.userId`)",
    "session": "the trace's session (pydantic-ai: `gen_ai.conversation.id`; Vercel: `...metadata.sessionId`)",
    "tags": "the trace's tags (Logfire: `logfire.tags`; Vercel: `ai.telemetry.metadata.tags`)",
}


DOC = PAYLOADS.parents[2] / "docs" / "compatibility.md"
BEGIN = "<!-- instrumentation matrix: generated by tests/corpus/matrix.py, do not edit -->"
END = "<!-- end of instrumentation matrix -->"


def section(text: str) -> str:
    """The generated section of the page's text ('' when it has none)."""
    if BEGIN not in text or END not in text:
        return ""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write() -> None:
    """Put :func:`render` between the markers of docs/compatibility.md (at its end if it has none)."""
    text = DOC.read_text() if DOC.exists() else "# Compatibility\n"
    block = f"{BEGIN}\n{render()}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.stdout.write(render())
