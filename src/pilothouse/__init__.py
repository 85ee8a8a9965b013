"""Pilothouse: open-source LLMOps.

The SDK surface (``import pilothouse``)::

    pilothouse.init(api_key="ph-...")          # where traces go (default http://127.0.0.1:4000)
    @pilothouse.observe                         # trace a function (sync, async, generators)
    with pilothouse.span("retrieve") as s: ...  # trace a block
    pilothouse.instrument_openai()              # trace every openai call
    pilothouse.score("correct", True)           # score the current trace
    pilothouse.flush()                          # export what is pending
    pilothouse.get_prompt("name", fallback=...) # a prompt of the registry, cached in memory
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pilothouse.prompts import get_prompt
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

# Loaded on first use: the server and the CLI import this package without paying for the
# OpenTelemetry SDK that only applications need.
_EXPORTS = {
    "instrument_anthropic": "pilothouse.tracing.instrument_anthropic",
    "uninstrument_anthropic": "pilothouse.tracing.instrument_anthropic",
    "instrument_openai": "pilothouse.tracing.instrument_openai",
    "uninstrument_openai": "pilothouse.tracing.instrument_openai",
    "ObservationSpan": "pilothouse.tracing.observe",
    "current_observation": "pilothouse.tracing.observe",
    "observe": "pilothouse.tracing.observe",
    "span": "pilothouse.tracing.observe",
    "update_current_trace": "pilothouse.tracing.observe",
    "flush": "pilothouse.tracing.sdk",
    "init": "pilothouse.tracing.sdk",
    "score": "pilothouse.tracing.sdk",
    "shutdown": "pilothouse.tracing.sdk",
    "trace_headers": "pilothouse.tracing.sdk",
    "get_prompt": "pilothouse.prompts",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pilothouse' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.2.0.dev0"  # 0.1.0 is cut in CHANGELOG.md; this is the next one in the making

__all__ = [
    "ObservationSpan",
    "__version__",
    "current_observation",
    "flush",
    "get_prompt",
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
