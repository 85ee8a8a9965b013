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
fallbacks:
  gpt-4o-mini: [claude-haiku]
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
from pathlib import Path
from typing import Any

import yaml

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
    deployments = []
    known = provider_names()
    for index, entry in enumerate(data.get("models") or []):
        where = f"{source}: models[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping")
        entry = _expand(entry, where)
        unknown = sorted(
            set(entry) - {"name", "provider", "model", "base_url", "api_key", "weight", "options"}
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
    return GatewayConfig(deployments, fallbacks, router)


def load_config(path: Path | None) -> GatewayConfig:
    """The gateway config of a YAML file (an empty config without one)."""
    if path is None:
        return GatewayConfig()
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))
