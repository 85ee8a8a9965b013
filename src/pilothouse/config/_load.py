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
    "load_yaml",
    "parse_config",
    "read_config_file",
    "speedups_disabled",
]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """A config file, an environment variable or an option that cannot be used; the message names it,
    the key path and what was expected."""


MAX_CONFIG_BYTES = 1024 * 1024  # a config file is a page of YAML, not a data file
MAX_CONFIG_VALUES = 100_000  # values after YAML aliases are expanded (a "billion laughs" file stops here)
MAX_CONFIG_DEPTH = 64


def expand_env(value: Any, where: str, environ: Mapping[str, str] | None = None) -> Any:
    """``${NAME}`` in the strings of ``value`` (nested in mappings and lists) replaced from the
    environment; an unset name is a :class:`ConfigError` naming ``where`` and the key path."""
    return _Expansion(where, os.environ if environ is None else environ).expand(value, ())


class _Expansion:
    """One expansion of ``${NAME}``: counts the values it visits (so a file of nested YAML aliases
    cannot make it copy without end) and remembers where it substituted (those values came from the
    environment: an error message must not echo them, they may be secrets)."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.values = 0
        self.substituted: set[tuple[int | str, ...]] = set()

    def where(self, location: tuple[int | str, ...]) -> str:
        return f"{self.source}: {_key_path(location)}" if location else self.source

    def expand(self, value: Any, location: tuple[int | str, ...]) -> Any:
        self.values += 1
        if self.values > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{self.source}: more than {MAX_CONFIG_VALUES:,} values (are YAML aliases nested?)"
            )
        if len(location) > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{self.where(location)}: nested more than {MAX_CONFIG_DEPTH} levels deep")
        if isinstance(value, str):
            if "${" not in value:
                return value

            def substitute(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in self.environ:
                    raise ConfigError(f"{self.where(location)}: environment variable {name} is not set")
                return self.environ[name]

            expanded = _ENV.sub(substitute, value)
            if expanded != value:
                self.substituted.add(location)
            return expanded
        if isinstance(value, Mapping):
            return {k: self.expand(v, (*location, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, (*location, i)) for i, v in enumerate(value)]
        return value


def _key_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(
    error: Mapping[str, Any],
    model: type[BaseModel] | None,
    location: tuple[Any, ...],
    hidden: set[tuple[int | str, ...]] | frozenset[tuple[int | str, ...]] = frozenset(),
) -> str:
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
        and location not in hidden
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


def config_error(
    exc: ValidationError,
    source: str,
    model: type[BaseModel] | None = None,
    hidden: set[tuple[int | str, ...]] | frozenset[tuple[int | str, ...]] = frozenset(),
) -> ConfigError:
    """One line for the first problem of a validation error (and how many more there are); the value
    is not echoed where its location is ``hidden`` (it came from the environment)."""
    first = exc.errors()[0]
    location = tuple(first["loc"])
    where = _key_path(location)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    prefix = f"{source}: {where}" if where else source
    return ConfigError(f"{prefix}: {_describe(first, model, location, hidden)}{more}")


def parse_config(data: Any, source: str = "config") -> PilothouseConfig:
    """The config of parsed YAML (``${NAME}`` expanded); :class:`ConfigError` names what is wrong."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config file must be a YAML mapping (with 'models', ...)")
    server = data.get("server")
    if isinstance(server, Mapping) and "config" in server:
        raise ConfigError(
            f"{source}: server.config: unknown key "
            "(the config file is named by --config or PILOTHOUSE_CONFIG)"
        )
    expansion = _Expansion(source, os.environ)
    data = expansion.expand(data, ())
    try:
        config = PilothouseConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source, PilothouseConfig, expansion.substituted) from None
    config._source = source
    return config


class FileTooLarge(ValueError):
    """A file past the size its reader takes (or not UTF-8 text); the message says which and why."""


def read_small_text(path: Path, limit: int, what: str) -> str:
    """The UTF-8 text of a file of at most ``limit`` bytes. It reads at most ``limit + 1`` bytes, so a
    device (``/dev/zero``, whose size stat gives as 0) or a huge file is refused without being read.
    Raises :class:`OSError` when the file cannot be read and :class:`FileTooLarge` past the limit."""
    with path.open("rb") as file:
        raw = file.read(limit + 1)
    if len(raw) > limit:
        size = f"{limit // (1024 * 1024)} MiB" if limit > 1024 * 1024 else f"{limit // 1024} KiB"
        raise FileTooLarge(f"{path}: larger than {size}: is this {what}?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileTooLarge(f"{path}: not UTF-8 text (byte {exc.start}): is this {what}?") from None


def read_config_file(path: Path) -> PilothouseConfig:
    """The config of a YAML file."""
    try:
        text = read_small_text(path, MAX_CONFIG_BYTES, "a config file")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except FileTooLarge as exc:
        raise ConfigError(str(exc)) from None
    try:
        data = load_yaml(text, str(path))
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML: {reason}") from None
    return parse_config(data, str(path))


def load_yaml(text: str, name: str, *, max_values: int = MAX_CONFIG_VALUES) -> Any:
    """YAML the user wrote (a config, an eval spec, a dataset), read safely: PyYAML's safe loader, a
    key given twice in one mapping refused, and no more than ``max_values`` values once aliases are
    followed nor :data:`MAX_CONFIG_DEPTH` levels (a "billion laughs" file is refused before anything
    walks it). Every problem is a :class:`yaml.YAMLError` whose message names ``name``."""
    loader = _Loader(text)
    loader.name = name
    try:
        data = loader.get_single_data()
    except RecursionError:
        raise yaml.YAMLError(f"{name}: nested more than {MAX_CONFIG_DEPTH} levels deep") from None
    finally:
        loader.dispose()
    _check_size(data, name, max_values)
    return data


def _check_size(data: Any, name: str, max_values: int) -> None:
    stack: list[tuple[Any, int]] = [(data, 0)]
    values = 0
    while stack:
        value, depth = stack.pop()
        values += 1
        if values > max_values:
            raise yaml.YAMLError(f"{name}: more than {max_values:,} values (are YAML aliases nested?)")
        if depth > MAX_CONFIG_DEPTH:
            raise yaml.YAMLError(f"{name}: nested more than {MAX_CONFIG_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (the second would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key {key!r} is given twice",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _environment_settings(
    overrides: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], set[str]]:
    """The settings the ``PILOTHOUSE_*`` environment sets (and which ones it sets). A variable with a
    bad value is an error unless an option in ``overrides`` replaces it (the option wins anyway)."""
    try:
        from_env = EnvSettings()
    except ValidationError as exc:
        fields = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        if overrides and fields and fields <= overrides.keys():
            from_env = EnvSettings(**{name: overrides[name] for name in fields})
        else:
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
    given = {k: v for k, v in options.items() if v is not None}
    env_values, _ = _environment_settings(given)
    path = config_file if config_file is not None else env_values.get("config")
    config = read_config_file(Path(path)) if path is not None else PilothouseConfig()
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
