"""The gateway: every model call Pilothouse makes or serves goes through :class:`Gateway` (admission,
caches, budget holds, routing or a cascade, settling, a span per call). The HTTP surfaces in
``pilothouse.server`` translate the OpenAI and Anthropic wire formats to and from it; in-process callers
use :class:`InProcessModel`, and :class:`HttpModel` calls any OpenAI-compatible endpoint, both through
the one chat-model interface (:class:`pilothouse.domain.chat.ChatModel`)."""

from pilothouse.gateway._caching import Caches
from pilothouse.gateway._gateway import Caller, Cascade, Gateway, GatewayError, GatewayReply, error_kind
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
    "Router",
    "UnknownModel",
    "error_kind",
    "gateway_config",
    "load_gateway_config",
    "retry_after_seconds",
]
