"""The gateway's config file: the models it serves, their fallbacks and the routing settings.

```yaml
models:
  - name: gpt-4o-mini            # the name clients ask for (several entries = several deployments)
    provider: openai             # openai | anthropic | local | sim (see pilothouse.providers)
    model: gpt-4o-mini           # the upstream model id
    base_url: https://...        # any OpenAI-compatible server
    api_key: ${OPENAI_API_KEY}   # ${ENV} expands from the environment
    weight: 1                    # share of traffic among deployments of the same name
    options: {}                  # provider settings (timeouts, headers, simulation knobs)
    price:                       # optional: overrides the catalogue (USD per 1M tokens) ...
      input: 0.15
      output: 0.60               # (also cache_read, cache_write, reasoning, max_output_tokens)
    # price: {per_hour_usd: 1.2, tokens_per_s: 900}   # ... or a self-hosted GPU's hourly cost and
    #                                                  # measured throughput (input_tokens_per_s too)
fallbacks:
  gpt-4o-mini: [claude-haiku]
cache:                           # exact response cache (off unless enabled)
  enabled: true
  ttl_s: 3600
  max_entries: 100000            # in-process LRU; with PILOTHOUSE_REDIS_URL the cache lives in Redis
  semantic:                      # answers to questions that mean the same (off unless enabled)
    enabled: true
    threshold: 0.92              # cosine similarity of the questions (all-MiniLM-L6-v2, in-process)
    verify_sample: 0.05          # share of hits re-checked against a fresh answer ...
    precision_floor: 0.8         # ... the route switches itself off below this measured precision
cascades:                        # cheap model first, escalate when a verifier rejects its answer
  - name: smart
    models: [gpt-4o-mini, claude-haiku]
    verifier: {type: regex, value: "(?i)not sure", negate: true}   # any eval scorer (rubric + judge ...)
router:
  retries: 2                     # further attempts after a retryable failure (429, 5xx, timeout)
  backoff_s: 0.05                # first backoff; doubles, with jitter, capped by max_backoff_s
  max_backoff_s: 5
  timeout_s: 600                 # a whole request, all attempts included
  strategy: weighted             # weighted | least-busy | latency, among a model's deployments
  breaker_failures: 5            # consecutive failures that open a deployment's circuit breaker
  breaker_cooldown_s: 30         # then one probe request decides whether it closes again
```
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from pilothouse.costs.catalogue import PriceRow
from pilothouse.gateway.cache import CacheSettings
from pilothouse.gateway.cascade import CascadeSettings, parse_cascades
from pilothouse.gateway.semantic_cache import SemanticCacheSettings
from pilothouse.providers.base import Deployment
from pilothouse.providers.registry import provider_names

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """The config file is wrong; the message names the entry."""


@dataclass(frozen=True)
class RouterSettings:
    """How the gateway retries and waits."""

    retries: int = 2
    backoff_s: float = 0.05
    max_backoff_s: float = 5.0
    timeout_s: float = 600.0
    strategy: str = "weighted"  # weighted | least-busy | latency
    breaker_failures: int = 5  # consecutive failures that open a deployment's circuit
    breaker_cooldown_s: float = 30.0  # open for this long, then one probe request

    def __post_init__(self) -> None:
        if self.strategy not in ("weighted", "least-busy", "latency"):
            raise ValueError(f"strategy must be weighted, least-busy or latency, not {self.strategy!r}")
        if self.retries < 0 or self.breaker_failures < 1:
            raise ValueError("retries must be >= 0 and breaker_failures >= 1")


@dataclass(frozen=True)
class GatewayConfig:
    """Deployments, fallbacks and router settings."""

    deployments: list[Deployment] = field(default_factory=list)
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    router: RouterSettings = field(default_factory=RouterSettings)
    prices: list[PriceRow] = field(default_factory=list)  # custom prices of deployments
    cache: CacheSettings = field(default_factory=CacheSettings)
    semantic_cache: SemanticCacheSettings = field(default_factory=SemanticCacheSettings)
    cascades: list[CascadeSettings] = field(default_factory=list)


def _expand(value: Any, where: str) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{where}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV.sub(replace, value)
    if isinstance(value, dict):
        return {k: _expand(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    return value


def parse_config(data: Any, source: str = "config") -> GatewayConfig:
    """A :class:`GatewayConfig` from parsed YAML; :class:`ConfigError` names what is wrong."""
    if data is None:
        return GatewayConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping with 'models'")
    sections = {"models", "fallbacks", "router", "cache", "cascades"}
    unknown_sections = sorted(set(data) - sections)
    if unknown_sections:
        raise ConfigError(
            f"{source}: unknown section {unknown_sections[0]!r} ({', '.join(sorted(sections))})"
        )
    deployments = []
    prices: list[PriceRow] = []
    known = provider_names()
    for index, entry in enumerate(data.get("models") or []):
        where = f"{source}: models[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping")
        entry = _expand(entry, where)
        unknown = sorted(
            set(entry) - {"name", "provider", "model", "base_url", "api_key", "weight", "options", "price"}
        )
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: 'name' is required")
        provider = entry.get("provider")
        if provider not in known:
            raise ConfigError(f"{where} ({name}): provider must be one of {', '.join(known)}")
        weight = entry.get("weight", 1)
        if not isinstance(weight, int | float) or weight <= 0:
            raise ConfigError(f"{where} ({name}): weight must be a positive number")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise ConfigError(f"{where} ({name}): options must be a mapping")
        if entry.get("price") is not None:
            prices.append(parse_price(entry["price"], provider, str(entry.get("model") or name), name, where))
        deployments.append(
            Deployment(
                name=name,
                provider=provider,
                model=str(entry.get("model") or name),
                base_url=entry.get("base_url"),
                api_key=entry.get("api_key"),
                weight=float(weight),
                options=options,
            )
        )
    names = {d.name for d in deployments}
    fallbacks: dict[str, list[str]] = {}
    for model, chain in (data.get("fallbacks") or {}).items():
        chain = [chain] if isinstance(chain, str) else chain
        if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
            raise ConfigError(f"{source}: fallbacks.{model} must be a list of model names")
        for target in [model, *chain]:
            if target not in names:
                raise ConfigError(
                    f"{source}: fallbacks.{model} names {target!r}, which no model entry serves"
                )
        fallbacks[model] = chain
    router_data = data.get("router") or {}
    try:
        router = RouterSettings(**router_data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: router: {exc}") from None
    cache_data = data.get("cache") or {}
    if not isinstance(cache_data, dict):
        raise ConfigError(f"{source}: cache must be a mapping (enabled, ttl_s, max_entries)")
    semantic_data = cache_data.get("semantic") or {}
    try:
        cache = CacheSettings(**{k: v for k, v in cache_data.items() if k != "semantic"})
        semantic = SemanticCacheSettings(**semantic_data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: cache: {exc}") from None
    if cache.ttl_s <= 0 or cache.max_entries < 1:
        raise ConfigError(f"{source}: cache: ttl_s must be > 0 and max_entries >= 1")
    try:
        cascades = parse_cascades(data.get("cascades"), names, source)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return GatewayConfig(deployments, fallbacks, router, prices, cache, semantic, cascades)


_PRICE_KEYS = {"input", "output", "cache_read", "cache_write", "reasoning", "max_output_tokens"}
_HOURLY_KEYS = {"per_hour_usd", "tokens_per_s", "input_tokens_per_s", "max_output_tokens"}


def parse_price(data: Any, provider: str, model: str, name: str, where: str) -> PriceRow:
    """A deployment's custom price: per-1M-token prices, or a self-hosted server's cost per hour and
    measured throughput (price per token = hourly cost / tokens per hour)."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: price must be a mapping (input/output per 1M tokens, or per_hour_usd)")
    hourly = "per_hour_usd" in data
    allowed = _HOURLY_KEYS if hourly else _PRICE_KEYS
    for key, value in data.items():
        if key not in allowed:
            raise ConfigError(f"{where}: price: unknown key {key!r} (known: {', '.join(sorted(allowed))})")
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: price.{key} must be a number >= 0")
    max_output = data.get("max_output_tokens")
    if hourly:
        if not data.get("tokens_per_s"):
            raise ConfigError(f"{where}: price.per_hour_usd needs tokens_per_s (measured output throughput)")
        output = data["per_hour_usd"] / (data["tokens_per_s"] * 3600) * 1e6
        input_rate = data.get("input_tokens_per_s") or data["tokens_per_s"]
        input_price = data["per_hour_usd"] / (input_rate * 3600) * 1e6
        return PriceRow(
            provider,
            model,
            date.min,
            input_price,
            output,
            max_output_tokens=max_output,
            source=f"config:{name}",
        )
    if "input" not in data or "output" not in data:
        raise ConfigError(f"{where}: price needs input and output (USD per 1M tokens)")
    return PriceRow(
        provider,
        model,
        date.min,
        float(data["input"]),
        float(data["output"]),
        cache_read=data.get("cache_read"),
        cache_write=data.get("cache_write"),
        reasoning=data.get("reasoning"),
        max_output_tokens=max_output,
        source=f"config:{name}",
    )


def load_config(path: Path | None) -> GatewayConfig:
    """The gateway config of a YAML file (an empty config without one)."""
    if path is None:
        return GatewayConfig()
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))
