"""The one config model: the YAML file (``server``, ``models``, ``fallbacks``, ``router``, ``cache``,
``cascades``), the ``PILOTHOUSE_*`` environment and command-line options, read once by
:func:`load_config` (option > environment > file > default). This package is the only code that reads
the config file or Pilothouse's environment variables; everything else is handed typed, checked
values. Errors are :class:`ConfigError`: one line naming the file or variable, the key path and what
was expected."""

from pilothouse.config._guardrails import GuardrailRule, GuardSpec
from pilothouse.config._load import (
    ConfigError,
    FileTooLarge,
    config_error,
    default_config_file,
    environment_settings,
    expand_env,
    load_config,
    load_settings,
    load_yaml,
    parse_config,
    read_config_file,
    read_small_text,
    speedups_disabled,
)
from pilothouse.config._model import (
    CacheSettings,
    CascadeSettings,
    ClientSettings,
    ModelEntry,
    PilothouseConfig,
    PriceSpec,
    RouterSettings,
    SemanticCacheSettings,
    Settings,
    default_home,
)

__all__ = [
    "CacheSettings",
    "CascadeSettings",
    "ClientSettings",
    "ConfigError",
    "FileTooLarge",
    "GuardSpec",
    "GuardrailRule",
    "ModelEntry",
    "PilothouseConfig",
    "PriceSpec",
    "RouterSettings",
    "SemanticCacheSettings",
    "Settings",
    "config_error",
    "default_config_file",
    "default_home",
    "environment_settings",
    "expand_env",
    "load_config",
    "load_settings",
    "load_yaml",
    "parse_config",
    "read_config_file",
    "read_small_text",
    "speedups_disabled",
]
