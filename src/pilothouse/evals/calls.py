"""What every eval call shares: the context it runs in (the run, item, epoch and trace, as a
:class:`pilothouse.domain.chat.CallContext`), the errors it can raise, and the typed reader of a
target's or judge's spec mapping (errors name ``section.key``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pilothouse import config
from pilothouse.domain.chat import CallContext, ModelCallError, SpanSink, current_call
from pilothouse.domain.ids import new_trace_id
from pilothouse.domain.traces import TraceAttributes

__all__ = [
    "CallContext",
    "Options",
    "SpanSink",
    "TargetConfigError",
    "TargetError",
    "current_call",
    "eval_context",
    "expand_env",
    "with_role",
]


class TargetConfigError(ValueError):
    """A target (or judge) spec that cannot be used; the message names the key."""


# A target's call fails the way a model call does: one error type, under the name plugin targets raise.
TargetError = ModelCallError


def eval_context(run_id: str, item_id: str, epoch: int, project_id: str = "default") -> CallContext:
    """The context of the target call of one item in one epoch: a new trace named ``eval``, tagged
    ``eval``, whose spans carry ``eval.run_id``, ``eval.item_id``, ``eval.epoch`` and ``eval.role``."""
    return CallContext(
        trace_id=new_trace_id(),
        project_id=project_id,
        attributes={
            "eval.run_id": run_id,
            "eval.item_id": item_id,
            "eval.epoch": epoch,
            "eval.role": "target",
        },
        trace=TraceAttributes(name="eval", tags=("eval",), metadata={"eval.run_id": run_id}),
    )


def with_role(context: CallContext, role: str, name: str | None = None) -> CallContext:
    """The same item's context for a call in another role (``judge``), with its own span name."""
    return replace(context, attributes={**context.attributes, "eval.role": role}, name=name)


# -- option readers -----------------------------------------------------------------------------------


def expand_env(value: Any, where: str) -> Any:
    """``${NAME}`` in strings replaced from the environment, as in the config file (an unset name is a
    :class:`TargetConfigError` naming ``where``)."""
    try:
        return config.expand_env(value, where)
    except config.ConfigError as exc:
        raise TargetConfigError(str(exc)) from None


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
