"""Settings: one table, each setting documented once.

Precedence: command-line argument > environment (``PILOTHOUSE_*``) > config file > default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    """``./.pilothouse`` unless ``PILOTHOUSE_HOME`` says otherwise."""
    return Path(".pilothouse")


class Settings(BaseSettings):
    """Every knob of ``pilothouse serve``; environment names are ``PILOTHOUSE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PILOTHOUSE_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="Folder for the SQLite file and models.")
    database_url: str | None = Field(
        default=None, description="sqlite:///path or postgresql://user@host/db; default SQLite in home."
    )
    redis_url: str | None = Field(default=None, description="Redis for shared counters (optional).")
    admin_key: str | None = Field(default=None, description="A secret with every scope on every project.")
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=4000, ge=1, le=65535, description="Port to listen on.")
    config: Path | None = Field(default=None, description="YAML config file (models, fallbacks).")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, description="Largest request body accepted.")
    ingest_queue_spans: int = Field(
        default=200_000, description="Spans held in memory before the collector answers 429."
    )
    ingest_batch_spans: int = Field(
        default=20_000,
        description="Most spans in one write batch (one SQLite transaction; PostgreSQL commits every 5,000).",
    )
    key_cache_seconds: float = Field(default=10.0, description="How long a checked API key is cached.")
    log_level: str = Field(default="info", description="Log level of the server.")

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``sqlite:///<home>/pilothouse.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'pilothouse.db').as_posix()}"

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Settings from arguments (``overrides`` that are not None), the environment, then the
        ``server:`` section of the config file, then defaults."""
        file_values: dict[str, Any] = {}
        if config_file is not None:
            import yaml

            try:
                data = yaml.safe_load(config_file.read_text()) or {}
            except yaml.YAMLError as exc:
                reason = " ".join(str(exc).split())
                raise ValueError(f"{config_file}: not valid YAML: {reason}") from None
            if not isinstance(data, dict):
                raise ValueError(f"{config_file}: the config file must be a YAML mapping")
            file_values = dict(data.get("server") or {})
            file_values["config"] = config_file
        try:
            env_only = cls()
            merged = {**file_values}
            for name in cls.model_fields:
                env_value = getattr(env_only, name)
                if name in env_only.model_fields_set:
                    merged[name] = env_value
            merged.update({k: v for k, v in overrides.items() if v is not None})
            return cls.model_validate(merged)
        except ValidationError as exc:  # a PILOTHOUSE_* variable, a config setting or an option
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ValueError(f"{field}: {first['msg']}{more}") from None
