"""The gateway: every model call Pilothouse makes or serves goes through :class:`Gateway` (admission,
caches, budget holds, routing or a cascade, settling, a span per call). The HTTP surfaces in
``pilothouse.server`` translate the OpenAI and Anthropic wire formats to and from it; in-process callers
use :class:`InProcessModel`, and :class:`HttpModel` calls any OpenAI-compatible endpoint, both through
the one chat-model interface (:class:`pilothouse.domain.chat.ChatModel`).

The names are imported on first use, so that a caller of the HTTP adapter alone (an eval over HTTP)
does not import the gateway's pipeline, caches and budgets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pilothouse.gateway._caching import Caches
    from pilothouse.gateway._gateway import (
        Caller,
        Cascade,
        Gateway,
        GatewayError,
        GatewayReply,
        RedisFaults,
        error_kind,
        redis_unavailable,
    )
    from pilothouse.gateway._models import HttpModel, InProcessModel, retry_after_seconds
    from pilothouse.gateway.config import ConfigError, GatewayConfig, gateway_config, load_gateway_config
    from pilothouse.gateway.recording import CallSpan
    from pilothouse.gateway.router import Attempt, Router, UnknownModel

__all__ = [
    "Attempt",
    "Caches",
    "CallSpan",
    "Caller",
    "Cascade",
    "ConfigError",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayReply",
    "HttpModel",
    "InProcessModel",
    "RedisFaults",
    "Router",
    "UnknownModel",
    "error_kind",
    "gateway_config",
    "load_gateway_config",
    "redis_unavailable",
    "retry_after_seconds",
]

_HOME = {
    "Attempt": "router",
    "Caches": "_caching",
    "CallSpan": "recording",
    "Caller": "_gateway",
    "Cascade": "_gateway",
    "ConfigError": "config",
    "Gateway": "_gateway",
    "GatewayConfig": "config",
    "GatewayError": "_gateway",
    "GatewayReply": "_gateway",
    "HttpModel": "_models",
    "InProcessModel": "_models",
    "RedisFaults": "_gateway",
    "Router": "router",
    "UnknownModel": "router",
    "error_kind": "_gateway",
    "gateway_config": "config",
    "load_gateway_config": "config",
    "redis_unavailable": "_gateway",
    "retry_after_seconds": "_models",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'pilothouse.gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pilothouse.gateway.{home}"), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
