"""What every eval call shares: the context it runs in (run, item, epoch, trace), the errors it can
raise, and the typed reader of a target's or judge's spec mapping (errors name ``section.key``)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pilothouse.domain.traces import SpanRecord

__all__ = [
    "CallContext",
    "Options",
    "SpanSink",
    "TargetConfigError",
    "TargetError",
    "current_call",
    "expand_env",
]

SpanSink = Callable[[SpanRecord], None]


class TargetConfigError(ValueError):
    """A target (or judge) spec that cannot be used; the message names the key."""


class TargetError(Exception):
    """A failed call. ``retryable``: another try may succeed (429, 5xx, timeouts, connection errors);
    ``status`` is the HTTP status when there was one (429 makes the runner slow down)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class CallContext:
    """Which run, item and epoch a call belongs to, and the trace it is recorded in."""

    run_id: str
    item_id: str
    epoch: int
    trace_id: str
    role: str = "target"  # target | judge
    project_id: str = "default"

    def attributes(self) -> dict[str, Any]:
        """The ``eval.*`` span attributes of a call."""
        return {
            "eval.run_id": self.run_id,
            "eval.item_id": self.item_id,
            "eval.epoch": self.epoch,
            "eval.role": self.role,
        }


# The item being evaluated, for judge calls made from inside scorers (one asyncio task per item).
current_call: ContextVar[CallContext | None] = ContextVar("pilothouse_eval_call", default=None)


# -- option readers -----------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: Any, where: str) -> Any:
    """``${NAME}`` in strings replaced from the environment (an unset name is an error naming ``where``)."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(1) not in os.environ:
                raise TargetConfigError(f"{where}: environment variable {match.group(1)} is not set")
            return os.environ[match.group(1)]

        return _ENV.sub(replace, value)
    if isinstance(value, Mapping):
        return {k: expand_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, where) for v in value]
    return value


class Options:
    """Typed reads of a target mapping; errors name ``section.key``."""

    def __init__(self, options: Mapping[str, Any], section: str, allowed: set[str]) -> None:
        unknown = sorted(set(options) - allowed - {"type"})
        if unknown:
            raise TargetConfigError(
                f"{section}.{unknown[0]}: unknown key (known: {', '.join(sorted(allowed))})"
            )
        self.options = options
        self.section = section

    def error(self, key: str, message: str) -> TargetConfigError:
        return TargetConfigError(f"{self.section}.{key}: {message}")

    def text(
        self, key: str, default: str | None = None, *, required: bool = False, env: bool = True
    ) -> str | None:
        value = self.options.get(key, default)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, not {value!r}")
        return str(expand_env(value, f"{self.section}.{key}")) if env else value

    def number(self, key: str, default: float | None = None, *, minimum: float = 0) -> float | None:
        value = self.options.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.error(key, f"must be a number >= {minimum:g}, not {value!r}")
        return float(value)

    def integer(self, key: str, default: int | None = None, *, minimum: int = 1) -> int | None:
        value = self.options.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"must be an integer >= {minimum}, not {value!r}")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.options.get(key) or {}
        if not isinstance(value, Mapping):
            raise self.error(key, "must be a mapping")
        return dict(value)

    def headers(self) -> dict[str, str]:
        headers = self.mapping("headers")
        if not all(isinstance(v, str | int | float) for v in headers.values()):
            raise self.error("headers", "values must be strings")
        return {str(k): str(expand_env(str(v), f"{self.section}.headers.{k}")) for k, v in headers.items()}

    def boolean(self, key: str, default: bool) -> bool:
        value = self.options.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value
