"""Providers by name. Each entry imports its module (and optional dependency) only when used, and a
missing dependency fails with an install hint."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from pilothouse.providers.base import Deployment, Provider

ProviderFactory = Callable[[Deployment], Provider]

# name -> (module, factory attribute, pip package for the install hint)
_BUILTIN: dict[str, tuple[str, str, str | None]] = {
    "openai": ("pilothouse.providers.openai", "OpenAIProvider", None),
    "anthropic": ("pilothouse.providers.anthropic", "AnthropicProvider", None),
    "sim": ("pilothouse.providers.sim", "SimProvider", None),
    "local": ("pilothouse.providers.local_embedding", "create_local_provider", "'pilothouse[local]'"),
}
_registered: dict[str, ProviderFactory] = {}


def register(name: str, factory: ProviderFactory) -> None:
    """Add (or replace) a provider; plugins use the same registry as the built-ins."""
    _registered[name] = factory


def provider_names() -> list[str]:
    """Every known provider name."""
    return sorted({*_BUILTIN, *_registered})


def create_provider(deployment: Deployment) -> Provider:
    """A provider instance for ``deployment``; ValueError for an unknown provider name."""
    factory = _registered.get(deployment.provider)
    if factory is None:
        entry = _BUILTIN.get(deployment.provider)
        if entry is None:
            raise ValueError(
                f"unknown provider {deployment.provider!r} for model {deployment.name!r} "
                f"(known: {', '.join(provider_names())})"
            )
        module_name, attribute, package = entry
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"; install it with: pip install {package}" if package else ""
            raise ValueError(
                f"provider {deployment.provider!r} needs a missing package ({exc.name}){hint}"
            ) from exc
        factory = getattr(module, attribute)
    return factory(deployment)
