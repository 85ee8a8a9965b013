"""The chat models eval targets and judges call, built from a spec's target or judge mapping: any
OpenAI-compatible endpoint (``base_url``: a Pilothouse gateway, vLLM, OpenAI) through
:class:`pilothouse.gateway.HttpModel`, or the models of a gateway config in-process (``config``,
default ``$PILOTHOUSE_CONFIG``, else ``./pilothouse.yaml``) through :class:`pilothouse.gateway.InProcessModel`
over a gateway of the eval's own (routing, retries, fallbacks, pricing; no limits, budgets or caches:
the runner has its own response cache).

In-process calls become generation spans handed to the span sink the runner gives ``start``; HTTP
calls carry a W3C ``traceparent`` so a Pilothouse gateway records them in the trace the runner chose.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pilothouse.config import default_config_file
from pilothouse.domain.chat import ChatModel
from pilothouse.evals.calls import Options, TargetConfigError
from pilothouse.evals.judges import Judge

__all__ = ["build_judge", "chat_model"]


def _in_process(config_path: Path | None, model: str, section: str) -> ChatModel:
    from pilothouse.costs.catalogue import PriceCatalogue
    from pilothouse.costs.pricing import Pricer
    from pilothouse.evals.verifier import add_cascades
    from pilothouse.gateway import Gateway, InProcessModel
    from pilothouse.gateway.config import ConfigError, load_gateway_config
    from pilothouse.gateway.router import Router

    try:
        config = load_gateway_config(config_path)
    except (ConfigError, OSError) as exc:
        raise TargetConfigError(f"{section}.config: {exc}") from None
    names = sorted({*(d.name for d in config.deployments), *(c.name for c in config.cascades)})
    if model not in names:
        if config_path:
            where = f"is not served by the config {config_path} (models: {', '.join(names) or 'none'})"
        else:
            where = (
                "has no gateway config to be served by"
                " (no config key, no $PILOTHOUSE_CONFIG, no ./pilothouse.yaml)"
            )
        raise TargetConfigError(
            f"{section}.model: {model!r} {where};"
            " set base_url to call an OpenAI-compatible server, or config to a gateway config file"
        )
    gateway = Gateway(Router(config), Pricer(PriceCatalogue.packaged(config.prices)))
    try:
        add_cascades(gateway, config.cascades)
    except ValueError as exc:
        raise TargetConfigError(f"{section}.config: {exc}") from None
    description = f"in-process ({config_path or 'no config'})"
    return InProcessModel(gateway, model, description=description, owns_gateway=True)


def chat_model(opts: Options, model: str, base_dir: Path, timeout_s: float) -> ChatModel:
    """The chat model a target or judge mapping names: over HTTP when it has ``base_url``, else
    in-process through its ``config`` (relative to the spec's folder)."""
    base_url = opts.text("base_url")
    if base_url is not None:
        from pilothouse.gateway import HttpModel

        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise opts.error("base_url", f"must be an http(s) URL, not {base_url!r}")
        from pilothouse.config import ClientSettings

        api_key = opts.text("api_key") or ClientSettings().key_for_models()
        return HttpModel(
            base_url,
            model,
            api_key=api_key,
            headers=opts.headers(),
            provider=opts.text("provider"),
            timeout_s=timeout_s,
        )
    config = opts.text("config")
    path = (
        (base_dir / config) if config and not Path(config).is_absolute() else Path(config) if config else None
    )
    return _in_process(path or default_config_file(), model, opts.section)


_JUDGE_KEYS = {
    "model",
    "base_url",
    "api_key",
    "provider",
    "config",
    "headers",
    "timeout_s",
    "structured",
    "logprobs",
}


def build_judge(options: Mapping[str, Any], base_dir: Path, model: str | None = None) -> Judge:
    """A judge from the spec's ``judge`` mapping (``model`` overrides its model: a scorer's ``judge``)."""
    opts = Options(options, "judge", _JUDGE_KEYS)
    name = model or opts.text("model", required=True)
    assert name is not None
    timeout_s = opts.number("timeout_s", 120.0) or 120.0
    return Judge(
        chat_model(opts, name, base_dir, timeout_s),
        structured=opts.boolean("structured", False),
        logprobs=opts.boolean("logprobs", True),
    )
