"""Reading the config: the YAML file (``${NAME}`` expanded from the environment), the ``PILOTHOUSE_*``
environment and command-line options, merged with one precedence (option > environment > file >
default) and checked by the config model. Errors are :class:`ConfigError`, one line naming the file
(or the variable), the key path and what was expected."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pilothouse.config._model import (
    SECRET_SETTINGS,
    EnvSettings,
    PilothouseConfig,
    Settings,
    SpeedupSettings,
)

__all__ = [
    "ConfigError",
    "config_error",
    "default_config_file",
    "environment_settings",
    "expand_env",
    "load_config",
    "load_settings",
    "parse_config",
    "read_config_file",
    "speedups_disabled",
]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """A config file, an environment variable or an option that cannot be used; the message names it,
    the key path and what was expected."""


def expand_env(value: Any, where: str, environ: Mapping[str, str] | None = None) -> Any:
    """``${NAME}`` in the strings of ``value`` (nested in mappings and lists) replaced from the
    environment; an unset name is a :class:`ConfigError` naming ``where`` and the key path."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"{where}: environment variable {name} is not set")
            return env[name]

        return _ENV.sub(substitute, value)
    if isinstance(value, Mapping):
        return {k: expand_env(v, f"{where}.{k}", env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    return value


def _key_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(error: Mapping[str, Any], model: type[BaseModel] | None, location: tuple[Any, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, location[:-1])
        return "unknown key" + (f" (known: {', '.join(known)})" if known else "")
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    secret = bool(location) and location[-1] in SECRET_SETTINGS
    if (
        kind not in ("missing",)
        and "input" in error
        and not isinstance(error["input"], dict | list)
        and not secret
    ):
        message += f" (got {error['input']!r})"
    return message


def _known_keys(model: type[BaseModel] | None, location: tuple[Any, ...]) -> list[str]:
    """The keys allowed where an unknown key was found, following the model along ``location``."""
    current: Any = model
    for part in location:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        current = _model_in(annotation)
    if current is None or not hasattr(current, "model_fields"):
        return []
    return sorted(name for name, f in current.model_fields.items() if not f.exclude)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def config_error(exc: ValidationError, source: str, model: type[BaseModel] | None = None) -> ConfigError:
    """One line for the first problem of a validation error (and how many more there are)."""
    first = exc.errors()[0]
    location = tuple(first["loc"])
    where = _key_path(location)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    prefix = f"{source}: {where}" if where else source
    return ConfigError(f"{prefix}: {_describe(first, model, location)}{more}")


def parse_config(data: Any, source: str = "config") -> PilothouseConfig:
    """The config of parsed YAML (``${NAME}`` expanded); :class:`ConfigError` names what is wrong."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config file must be a YAML mapping (with 'models', ...)")
    data = expand_env(data, source)
    try:
        config = PilothouseConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source, PilothouseConfig) from None
    config._source = source
    return config


def read_config_file(path: Path) -> PilothouseConfig:
    """The config of a YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML: {reason}") from None
    return parse_config(data, str(path))


def _environment_settings() -> tuple[dict[str, Any], set[str]]:
    """The settings the ``PILOTHOUSE_*`` environment sets (and which ones it sets)."""
    try:
        from_env = EnvSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "PILOTHOUSE_" + str(first["loc"][0]).upper() if first["loc"] else "PILOTHOUSE_*"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{name}: {_describe(first, Settings, tuple(first['loc']))}{more}") from None
    return {name: getattr(from_env, name) for name in from_env.model_fields_set}, from_env.model_fields_set


def environment_settings() -> Settings:
    """The settings of the ``PILOTHOUSE_*`` environment alone (no file, no options), for code that
    runs outside ``serve`` (a local model's cache folder, an eval's default config file)."""
    values, _ = _environment_settings()
    return Settings.model_validate(values)


def speedups_disabled() -> bool:
    """``PILOTHOUSE_NO_SPEEDUPS=1``: run the pure-Python references instead of the compiled accelerators
    (``pilothouse._speedups`` asks once, at import)."""
    try:
        return SpeedupSettings().disabled
    except ValidationError as exc:
        given = exc.errors()[0].get("input")
        raise ConfigError(f"PILOTHOUSE_NO_SPEEDUPS: expected 1 or 0 (true or false), got {given!r}") from None


def default_config_file() -> Path | None:
    """The config file in-process model calls use: ``$PILOTHOUSE_CONFIG``, else ``./pilothouse.yaml``
    when there is one."""
    configured = environment_settings().config
    if configured is not None:
        return configured
    local = Path("pilothouse.yaml")
    return local if local.is_file() else None


def load_settings(config_file: Path | None = None, **options: Any) -> Settings:
    """The server's settings: ``options`` (those not None) over the environment over the ``server:``
    section of ``config_file`` (default: ``$PILOTHOUSE_CONFIG``) over the defaults."""
    return load_config(config_file, **options).server


def load_config(config_file: Path | None = None, **options: Any) -> PilothouseConfig:
    """The whole config: the file (``config_file``, else ``$PILOTHOUSE_CONFIG``, else none) with its
    ``server:`` section merged with the environment and ``options`` (those not None). The one place
    Pilothouse reads its config file and ``PILOTHOUSE_*`` settings."""
    env_values, _ = _environment_settings()
    path = config_file if config_file is not None else env_values.get("config")
    config = read_config_file(Path(path)) if path is not None else PilothouseConfig()
    given = {k: v for k, v in options.items() if v is not None}
    merged = {**config.server.model_dump(exclude_unset=True), **env_values, **given}
    if path is not None:
        merged["config"] = Path(path)
    try:
        server = Settings.model_validate(merged)
    except ValidationError as exc:  # the file and the environment were checked: an option is wrong
        first = exc.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "an option"
        raise ConfigError(f"{option}: {_describe(first, Settings, tuple(first['loc']))}") from None
    result = config.model_copy(update={"server": server})
    result._source = config.source
    return result
