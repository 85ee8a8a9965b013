"""Pilothouse: open-source LLMOps.

The SDK surface (``import pilothouse``)::

    pilothouse.init(api_key="ph-...")          # where traces go (default http://127.0.0.1:4000)
    @pilothouse.observe                         # trace a function (sync, async, generators)
    with pilothouse.span("retrieve") as s: ...  # trace a block
    pilothouse.instrument_openai()              # trace every openai call
    pilothouse.score("correct", True)           # score the current trace
    pilothouse.flush()                          # export what is pending
"""

from pilothouse.tracing.instrument_anthropic import instrument_anthropic, uninstrument_anthropic
from pilothouse.tracing.instrument_openai import instrument_openai, uninstrument_openai
from pilothouse.tracing.observe import (
    ObservationSpan,
    current_observation,
    observe,
    span,
    update_current_trace,
)
from pilothouse.tracing.sdk import flush, init, score, shutdown, trace_headers

__version__ = "0.1.0.dev0"

__all__ = [
    "ObservationSpan",
    "__version__",
    "current_observation",
    "flush",
    "init",
    "instrument_anthropic",
    "instrument_openai",
    "observe",
    "score",
    "shutdown",
    "span",
    "trace_headers",
    "uninstrument_anthropic",
    "uninstrument_openai",
    "update_current_trace",
]
