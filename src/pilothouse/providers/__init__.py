"""Upstream model APIs behind one protocol, created by name from a registry."""

from pilothouse.providers.base import Deployment, Provider, ProviderError
from pilothouse.providers.registry import create_provider, provider_names, register

__all__ = ["Deployment", "Provider", "ProviderError", "create_provider", "provider_names", "register"]
