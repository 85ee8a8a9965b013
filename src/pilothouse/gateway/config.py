"""What the gateway serves, made from the config model (:mod:`pilothouse.config`): the deployments of
each model name, their fallbacks, custom prices, the router, cache and cascade settings.

```yaml
models:
  - name: gpt-4o-mini            # the name clients ask for (several entries = several deployments)
    provider: openai             # openai | anthropic | local | sim (see pilothouse.providers)
    model: gpt-4o-mini           # the upstream model id
    base_url: https://...        # any OpenAI-compatible server
    api_key: ${OPENAI_API_KEY}   # ${ENV} expands from the environment
    weight: 1                    # share of traffic among deployments of the same name
    options: {}                  # provider settings (timeouts, headers, simulation knobs)
    price: {input: 0.15, output: 0.60}   # optional: USD per 1M tokens, or per_hour_usd + tokens_per_s
  - name: "openai/*"              # a wildcard route: openai/gpt-4.1 calls the upstream model gpt-4.1
    provider: openai
fallbacks:
  gpt-4o-mini: [claude-haiku]
aliases:
  gpt-4: gpt-4o-mini               # clients asking for gpt-4 are served by gpt-4o-mini
cache: {enabled: true, ttl_s: 3600, semantic: {enabled: true, threshold: 0.92}}
cascades:
  - name: smart
    models: [gpt-4o-mini, claude-haiku]
    verifier: {type: regex, value: "(?i)not sure", negate: true}
router: {retries: 2, backoff_s: 0.05, timeout_s: 600, strategy: weighted, breaker_failures: 5}
```

docs/config.md is the reference of every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilothouse.config import (
    CacheSettings,
    CascadeSettings,
    ConfigError,
    GuardrailRule,
    PilothouseConfig,
    RouterSettings,
    SemanticCacheSettings,
    parse_config,
    read_config_file,
)
from pilothouse.costs.catalogue import PriceRow, custom_price_row
from pilothouse.providers.base import Deployment
from pilothouse.providers.registry import provider_names

__all__ = ["ConfigError", "GatewayConfig", "gateway_config", "load_gateway_config"]


@dataclass(frozen=True)
class GatewayConfig:
    """Deployments, fallbacks, custom prices and the router, cache and cascade settings."""

    deployments: list[Deployment] = field(default_factory=list)
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    router: RouterSettings = field(default_factory=RouterSettings)
    prices: list[PriceRow] = field(default_factory=list)  # custom prices of deployments
    cache: CacheSettings = field(default_factory=CacheSettings)
    cascades: list[CascadeSettings] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # a name clients ask for -> a served name
    guardrails: tuple[GuardrailRule, ...] = ()  # built into guards by the server (pilothouse.quality)
    source: str = "config"  # the file, for the errors of what is built later (the guards)

    @property
    def semantic_cache(self) -> SemanticCacheSettings:
        """``cache.semantic``."""
        return self.cache.semantic

    @classmethod
    def from_config(cls, config: PilothouseConfig) -> GatewayConfig:
        """The gateway's view of a config; :class:`ConfigError` for a provider no one registered."""
        known = provider_names()
        deployments, prices = [], []
        for index, entry in enumerate(config.models):
            if entry.provider not in known:
                raise ConfigError(
                    f"{config.source}: models[{index}].provider: provider must be one of {', '.join(known)} "
                    f"(got {entry.provider!r})"
                )
            # a wildcard route without a model: the upstream model is the part the * matched
            model = "*" if "*" in entry.name and entry.model is None else entry.upstream_model
            if entry.price is not None:
                prices.append(custom_price_row(entry.price, entry.provider, model, entry.name))
            deployments.append(
                Deployment(
                    name=entry.name,
                    provider=entry.provider,
                    model=model,
                    base_url=entry.base_url,
                    api_key=entry.api_key.get_secret_value() if entry.api_key else None,
                    weight=entry.weight,
                    options=dict(entry.options),
                )
            )
        return cls(
            deployments,
            {name: list(chain) for name, chain in config.fallbacks.items()},
            config.router,
            prices,
            config.cache,
            list(config.cascades),
            dict(config.aliases),
            config.guardrails,
            config.source,
        )


def gateway_config(data: Any, source: str = "config") -> GatewayConfig:
    """The gateway config of parsed YAML (a test's or a doc's example); :class:`ConfigError`."""
    return GatewayConfig.from_config(parse_config(data, source))


def load_gateway_config(path: Path | None) -> GatewayConfig:
    """The gateway config of a YAML file (an empty one without a file)."""
    return GatewayConfig.from_config(read_config_file(path) if path is not None else PilothouseConfig())
