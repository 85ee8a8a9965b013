"""The serving logic behind the OpenAI-compatible surface: config, routing, validation, recording.
The HTTP endpoints themselves are in ``pilothouse.server.gateway_api``."""

from pilothouse.gateway.config import ConfigError, GatewayConfig, load_config, parse_config
from pilothouse.gateway.router import Attempt, Router, UnknownModel

__all__ = ["Attempt", "ConfigError", "GatewayConfig", "Router", "UnknownModel", "load_config", "parse_config"]
