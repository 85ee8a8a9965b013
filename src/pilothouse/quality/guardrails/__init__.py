"""Guardrails: input and output guards per route, run by the gateway (docs/guardrails.md).

The config's ``guardrails:`` rules name guard types of a registry (``pii``, ``regex``, ``blocklist``,
``json_schema``, ``prompt_injection``, ``groundedness``, ``scorer``, or a plugin's, added with
:func:`register_guard`); :func:`build_guardrails` turns them into the
:class:`~pilothouse.domain.guards.Guardrails` the server hands to :class:`pilothouse.gateway.Gateway`."""

from pilothouse.quality.guardrails._groundedness import Grounding, lexical_detector, register_detector
from pilothouse.quality.guardrails._pii import ENTITIES, find_entities, iban_valid, luhn_valid
from pilothouse.quality.guardrails._registry import (
    BuiltGuard,
    GuardConfigError,
    GuardOptions,
    build_guardrails,
    guard_types,
    register_guard,
)

__all__ = [
    "ENTITIES",
    "BuiltGuard",
    "Grounding",
    "GuardConfigError",
    "GuardOptions",
    "build_guardrails",
    "find_entities",
    "guard_types",
    "iban_valid",
    "lexical_detector",
    "luhn_valid",
    "register_detector",
    "register_guard",
]
