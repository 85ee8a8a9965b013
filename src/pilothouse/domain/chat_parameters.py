"""The top-level parameters of an OpenAI-style chat request and the ranges of their numbers: what the
gateway checks on every request (:mod:`pilothouse.gateway.validation`) and what a prompt version's
``parameters`` are checked against when it is stored, so a version that every request would refuse
is refused once, at store time."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CHAT_PARAMETERS",
    "INTEGER_RANGES",
    "NUMBER_RANGES",
    "number_problem",
    "parameter_problem",
]

NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "frequency_penalty": (-2, 2),
    "presence_penalty": (-2, 2),
}
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "max_tokens": (1, 10_000_000),
    "max_completion_tokens": (1, 10_000_000),
    "n": (1, 128),
    "seed": (-(2**63), 2**63 - 1),
    "top_logprobs": (0, 20),
}

CHAT_PARAMETERS = frozenset(
    {
        "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
        "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier", "seed",
        "service_tier", "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
        # sampling parameters of OpenAI-compatible servers (vLLM, llama.cpp), passed on to them
        "top_k", "min_p", "repetition_penalty",
        # the gateway's own: drop what the chosen deployment cannot honour (else a 400 names it)
        "drop_params",
    }
)  # fmt: skip
"""The top-level parameters of OpenAI's chat completions API (any other is a 400, as OpenAI answers)."""


def number_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` as the ranged number ``name`` (None: nothing, or not a ranged one)."""
    if value is None:
        return None
    if name in NUMBER_RANGES:
        low, high = NUMBER_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            return f"'{name}' must be a number from {low} to {high}."
    elif name in INTEGER_RANGES:
        low_i, high_i = INTEGER_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low_i <= value <= high_i:
            return f"'{name}' must be an integer from {low_i} to {high_i}."
    return None


def parameter_problem(name: str, value: Any) -> str | None:
    """What is wrong with a chat request's parameter ``name`` set to ``value``: not one of
    :data:`CHAT_PARAMETERS`, out of its range, or holding a number that is not finite (JSON has no
    NaN or infinity: it would be stored as null). None: nothing found."""
    if name not in CHAT_PARAMETERS:
        shown = name if len(name) <= 64 else name[:64] + "..."
        return f"Unrecognized request argument supplied: {shown}"
    if not _finite(value):
        return f"'{name}' holds a number that is not finite (NaN or infinity)."
    return number_problem(name, value)


def _finite(value: Any, depth: int = 0) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 32:
        return True
    if isinstance(value, Mapping):
        return all(_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v, depth + 1) for v in value)
    return True
