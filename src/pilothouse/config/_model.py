"""The config model: every section of the YAML file (``server``, ``models``, ``fallbacks``, ``router``,
``cache``, ``cascades``, ``guardrails``) and the settings of the environment, as pydantic models.
Values are checked here once; the packages that use them (gateway, costs, server) read typed, valid
objects."""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pilothouse.config._guardrails import GuardrailRule, check_guardrails

__all__ = [
    "CacheSettings",
    "CascadeSettings",
    "ClientSettings",
    "ModelEntry",
    "PilothouseConfig",
    "PriceSpec",
    "RouterSettings",
    "SemanticCacheSettings",
    "Settings",
]


class _Section(BaseModel):
    """A section of the file: unknown keys are errors (a typo must not be ignored), values immutable,
    numbers finite (``.nan`` or ``.inf`` in YAML would break every request that reads them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


MIN_ADMIN_KEY_CHARS = 16
SECRET_SETTINGS = frozenset({"admin_key", "session_secret"})  # never echoed in an error message


def default_home() -> Path:
    """``./.pilothouse``: where the SQLite file, converted local models and the UI's secret live."""
    return Path(".pilothouse")


class Settings(_Section):
    """How ``pilothouse serve`` runs: the ``server:`` section, ``PILOTHOUSE_<NAME>`` environment
    variables and command-line options (an option beats the environment, which beats the file)."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)

    home: Path = Field(default_factory=default_home, description="Folder for the SQLite file and models.")
    database_url: str | None = Field(
        default=None, description="sqlite:///path or postgresql://user@host/db; default SQLite in home."
    )
    redis_url: str | None = Field(default=None, description="Redis for shared counters (optional).")
    limits_fail_open: bool = Field(
        default=False,
        description="While Redis is unavailable, serve calls without their rate limits (default: 503).",
    )
    budgets_fail_open: bool = Field(
        default=False,
        description="While Redis is unavailable, serve calls without a budget hold (default: 503).",
    )
    cache_fail_open: bool = Field(
        default=True,
        description="While Redis is unavailable, treat the response cache as a miss (false: 503).",
    )
    webhook_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Hosts, addresses or CIDR networks budget and monitor webhooks may reach though not "
        "public (comma-separated in the environment); other private or loopback targets are refused.",
    )

    @field_validator("webhook_allow", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    admin_key: str | None = Field(
        default=None,
        description="A secret with every scope on every project (at least 16 characters).",
    )
    session_secret: SecretStr | None = Field(
        default=None, description="Signs the web UI's session cookies (default: a file in home)."
    )
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=4000, ge=1, le=65535, description="Port to listen on.")
    config: Path | None = Field(default=None, description="YAML config file (models, fallbacks, ...).")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="Largest request body accepted.")
    max_inflight_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Bytes of request bodies (OTLP, gateway, /api JSON) held at once (429 past it).",
    )
    body_wait_seconds: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="How long a request waits, its body unread, for room in max_inflight_body_bytes "
        "before its 429 (0: refused at once).",
    )
    large_body_bytes_per_second: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Bytes a second that bodies of 1 MiB or more are read at, all together (0: no pace).",
    )
    ingest_queue_spans: int = Field(
        default=200_000, ge=1, description="Spans held in memory before the collector answers 429."
    )
    ingest_batch_spans: int = Field(
        default=20_000,
        ge=1,
        description="Most spans in one write batch (one SQLite transaction; PostgreSQL commits every 5,000).",
    )
    # Limits on what one request may make the server hold or do (docs/limits.md).
    max_decompressed_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Largest OTLP body once decompressed (413 past it)."
    )
    ingest_queue_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1,
        description="Bytes of accepted exports held in memory before the collector answers 429.",
    )
    max_span_attributes: int = Field(
        default=128, ge=1, description="Attributes kept per span, event and resource; more are left out."
    )
    max_attribute_value_bytes: int = Field(
        default=1024 * 1024, ge=1, description="A longer attribute value is cut to this many bytes."
    )
    max_attribute_key_bytes: int = Field(
        default=256, ge=1, description="An attribute with a longer key (UTF-8 bytes) is left out."
    )
    max_export_spans: int = Field(default=20_000, ge=1, description="Most spans in one OTLP export (413).")
    max_export_values: int = Field(
        default=500_000, ge=1, description="Most attribute values (nested ones too) in one OTLP export (413)."
    )
    key_cache_seconds: float = Field(default=10.0, ge=0, description="How long a checked API key is cached.")
    prompt_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often a server process asks the database whether a prompt label moved "
        "(without Redis).",
    )
    durable: bool = Field(
        default=False,
        description="Append each span and gateway call to a spool on disk (fsync) before answering 200.",
    )
    spool_dir: Path | None = Field(
        default=None, description="The durable mode's spool folder; default <home>/spool/<database>."
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        default="info", description="Log level of the server."
    )
    secure_cookies: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="The Secure flag of the UI's cookies: auto = when the request came over HTTPS (or a "
        "trusted proxy says X-Forwarded-Proto: https).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto headers are believed.",
    )
    auth_failures_burst: int = Field(
        default=20,
        ge=1,
        description="Failed logins or API keys a client IP (or key prefix) may make at once.",
    )
    auth_failures_per_minute: float = Field(
        default=20.0, gt=0, description="How fast that allowance refills; past it: 429 with Retry-After."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call /v1 (CORS), e.g. https://app.example.com or *; none "
        "by default.",
    )
    stored_responses: int = Field(
        default=10_000,
        ge=0,
        description="Responses API answers kept for previous_response_id and GET /v1/responses/{id} "
        "(in this process, oldest dropped first; 0 keeps none). With redis_url they are kept in Redis "
        "instead, shared by every process, each for stored_responses_ttl_s.",
    )
    stored_responses_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="The most bytes those stored responses may hold."
    )
    stored_responses_ttl_s: float = Field(
        default=24 * 3600.0, gt=0, description="How long a stored response is kept."
    )
    ingest_copy: bool = Field(
        default=True,
        description="PostgreSQL: write span rows by binary COPY through a staging table (false: one "
        "INSERT per row, the slower path kept for comparison).",
    )
    retention_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="How often each project's retention_days is applied (one process at a time holds "
        "the job); 0 turns it off in this process.",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Server processes sharing the port; more than 1 needs Redis and not durable (on "
        "SQLite one more process writes the spans); default the number of CPU cores on PostgreSQL with "
        "Redis, else 1.",
    )
    monitor_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="How often the monitors are evaluated (one process at a time holds the job); 0 turns "
        "the evaluation off in this process.",
    )
    online_evals: bool = Field(
        default=True, description="Run the online evaluators' background worker in this process."
    )
    online_evals_poll_s: float = Field(
        default=1.0,
        ge=0.01,
        le=3600,
        description="How often the online worker looks for new traces and due work.",
    )
    online_evals_settle_s: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="How long a new trace is left to gather its spans before online rules look at it.",
    )
    online_evals_lease_s: float = Field(
        default=300.0,
        ge=1,
        le=86_400,
        description="How long a claimed online item is held before another worker may take it.",
    )
    online_evals_max_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Attempts at an online item before it is unmeasured with the last error.",
    )
    online_evals_concurrency: int = Field(
        default=4, ge=1, le=64, description="Online items one worker scores at once."
    )
    online_evals_stall_s: float = Field(
        default=300.0,
        ge=1,
        description="Due online work older than this (or a silent worker) is a stall in /health.",
    )
    canary_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="How often running prompt canaries are checked and, on evidence, promoted or rolled "
        "back (one process at a time holds the job); 0 turns the checks off in this process.",
    )
    canary_score: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The score name (on traces, higher is better: a pass rate or a mean) that decides "
        "canaries; unset, canaries run until a person ends them.",
    )
    canary_margin: float = Field(
        default=0.02,
        ge=0,
        le=1e9,
        description="Non-inferiority margin of a canary, in the score's units (0.02: two points of pass "
        "rate): a canary no worse than this is promoted.",
    )
    canary_alpha: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="Error rate of the canary's always-valid test (a good canary rolled back, a worse "
        "one promoted), however often it is checked.",
    )
    canary_min_samples: int = Field(
        default=100,
        ge=2,
        le=10**9,
        description="Scored traces each arm needs before a canary can be decided.",
    )

    @field_validator("admin_key", mode="after")
    @classmethod
    def _long_admin_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_ADMIN_KEY_CHARS:
            raise ValueError(
                f"must be at least {MIN_ADMIN_KEY_CHARS} characters (it opens every project): use a random "
                "secret, e.g. the output of 'openssl rand -hex 24'"
            )
        return value

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (CIDR)") from None
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``sqlite:///<home>/pilothouse.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'pilothouse.db').as_posix()}"

    @property
    def resolved_workers(self) -> int:
        """``workers``, else 1 on SQLite, in the durable mode (one process holds the spool) or without
        Redis (where the processes would count rate limits and budget holds each on their own), and
        the number of CPU cores on PostgreSQL with Redis."""
        if self.workers is not None:
            return self.workers
        if self.durable or not self.redis_url or self.resolved_database_url.startswith("sqlite"):
            return 1
        return max(1, os.cpu_count() or 1)

    @property
    def resolved_spool_dir(self) -> Path:
        """The durable mode's spool folder: ``spool_dir``, else one per database under
        ``<home>/spool`` (named by a digest of its URL without credentials), so that a spool is only
        ever replayed into the database it was written for."""
        if self.spool_dir is not None:
            return self.spool_dir
        return self.home / "spool" / self.store_id

    @property
    def store_id(self) -> str:
        """A digest of the database URL without credentials: it names what servers of one store share
        in Redis beyond the limits (circuit breakers), and the durable mode's spool folder."""
        url = re.sub(r"//[^/@]*@", "//", self.resolved_database_url)
        return hashlib.sha256(url.encode()).hexdigest()[:16]


class EnvSettings(BaseSettings, Settings):
    """:class:`Settings` from ``PILOTHOUSE_*`` environment variables alone."""

    model_config = SettingsConfigDict(env_prefix="PILOTHOUSE_", extra="ignore")


class SpeedupSettings(BaseSettings):
    """Whether the compiled accelerators of ``pilothouse._speedups`` run: read from the environment when
    that package is first imported, before any config file is loaded."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_ignore_empty=True)

    disabled: bool = Field(default=False, alias="PILOTHOUSE_NO_SPEEDUPS")


class ClientSettings(BaseSettings):
    """What a client of a Pilothouse server reads from the environment: the SDK (``pilothouse.init``),
    eval targets and judges over HTTP, the CLI's remote commands."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, alias="PILOTHOUSE_API_KEY")
    base_url: str = Field(default="http://127.0.0.1:4000", alias="PILOTHOUSE_BASE_URL")
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    service_name: str = Field(default="app", alias="OTEL_SERVICE_NAME")
    prompt_cache_seconds: float = Field(default=60.0, ge=0, alias="PILOTHOUSE_PROMPT_CACHE_SECONDS")

    def key_for_models(self) -> str | None:
        """The key for an OpenAI-compatible endpoint: ``$PILOTHOUSE_API_KEY``, else ``$OPENAI_API_KEY``."""
        secret = self.api_key or self.openai_api_key
        return secret.get_secret_value() if secret else None


MAX_PRICE_USD = 1_000_000.0  # per 1M tokens or per hour: beyond it a typo, not a price


def _price(value: float | None) -> float | None:
    if value is not None and not 0 <= value <= MAX_PRICE_USD:
        raise ValueError(f"must be a number from 0 to {MAX_PRICE_USD:,.0f}")
    return value


class PriceSpec(_Section):
    """``models[].price``: USD per 1M tokens (``input``, ``output``, ...), or a self-hosted server's
    cost per hour and measured throughput (``per_hour_usd``, ``tokens_per_s``, ``input_tokens_per_s``)."""

    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    max_output_tokens: int | None = Field(default=None, ge=0)
    per_hour_usd: float | None = None
    tokens_per_s: float | None = Field(default=None, ge=1e-3, le=1e9)
    input_tokens_per_s: float | None = Field(default=None, ge=1e-3, le=1e9)

    _check = field_validator(
        "input", "output", "cache_read", "cache_write", "reasoning", "per_hour_usd", mode="after"
    )(_price)

    @model_validator(mode="after")
    def _one_kind(self) -> PriceSpec:
        rates = ("input", "output", "cache_read", "cache_write", "reasoning")
        per_token = [k for k in rates if getattr(self, k) is not None]
        if self.per_hour_usd is not None:
            if per_token:
                raise ValueError(f"give per-token prices or per_hour_usd, not both ({per_token[0]})")
            if self.tokens_per_s is None:
                raise ValueError("per_hour_usd needs tokens_per_s (measured output throughput)")
        elif self.input is None or self.output is None:
            raise ValueError("needs input and output (USD per 1M tokens), or per_hour_usd and tokens_per_s")
        return self

    @property
    def hourly(self) -> bool:
        """A self-hosted price (per hour), not a per-token one."""
        return self.per_hour_usd is not None


class ModelEntry(_Section):
    """``models[]``: one deployment of a model name (several entries of a name share its traffic)."""

    name: str = Field(min_length=1, description="The name clients ask for.")
    provider: str = Field(min_length=1, description="openai | anthropic | local | sim, or a plugin's.")
    model: str | None = Field(default=None, description="The upstream model id (default: name).")
    base_url: str | None = None
    api_key: SecretStr | None = None
    weight: float = Field(default=1.0, gt=0, le=1e6)
    options: dict[str, Any] = Field(default_factory=dict)
    price: PriceSpec | None = None

    @property
    def upstream_model(self) -> str:
        """The upstream model id: also the price lookup key."""
        return self.model or self.name


class RouterSettings(_Section):
    """``router:``: how the gateway retries and waits."""

    retries: int = Field(default=2, ge=0)
    backoff_s: float = Field(default=0.05, ge=0)
    max_backoff_s: float = Field(default=5.0, ge=0)
    timeout_s: float = Field(default=600.0, gt=0)
    strategy: Literal["weighted", "least-busy", "latency"] = "weighted"
    breaker_failures: int = Field(default=5, ge=1)  # consecutive failures that open a deployment's circuit
    breaker_cooldown_s: float = Field(default=30.0, ge=0)  # open for this long, then one probe request


class SemanticCacheSettings(_Section):
    """``cache.semantic:``: answers to questions that mean the same."""

    enabled: bool = False
    threshold: float = Field(default=0.92, ge=0, le=1)  # cosine similarity of the questions for a hit
    multi_turn: bool = False  # also cache conversations with earlier turns
    ttl_s: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1)  # per scope; the oldest go first
    verify_sample: float = Field(default=0.05, ge=0, le=1)  # share of hits re-checked against a fresh answer
    answer_threshold: float = Field(default=0.80, ge=0, le=1)  # cached vs fresh answers: agreement
    precision_floor: float = Field(default=0.80, ge=0, le=1)  # below this measured precision the route is off
    min_verified: int = Field(default=20, ge=1)  # ... once this many hits were re-checked
    model: str = "all-minilm-l6-v2"


class CacheSettings(_Section):
    """``cache:``: the exact response cache (in-process LRU, or Redis when configured)."""

    enabled: bool = False
    ttl_s: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=100_000, ge=1)  # in-process only; Redis evicts by its own policy
    semantic: SemanticCacheSettings = Field(default_factory=SemanticCacheSettings)


class CascadeSettings(_Section):
    """``cascades[]``: a model name served by trying cheaper models first."""

    name: str = Field(min_length=1)
    models: tuple[str, ...] = Field(min_length=2, description="Served model names, cheapest first.")
    verifier: dict[str, Any] = Field(description="An eval scorer spec (with a type).")
    judge: str | None = None

    @field_validator("verifier")
    @classmethod
    def _scorer_spec(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "type" not in value:
            raise ValueError("must be a scorer spec with a 'type'")
        return value


class PilothouseConfig(_Section):
    """The whole config file."""

    server: Settings = Field(default_factory=Settings)
    models: tuple[ModelEntry, ...] = ()
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)  # a name clients ask for -> a served name
    router: RouterSettings = Field(default_factory=RouterSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    cascades: tuple[CascadeSettings, ...] = ()
    guardrails: tuple[GuardrailRule, ...] = ()
    _source: str = PrivateAttr(default="config")  # the file it came from, for error messages

    @property
    def source(self) -> str:
        """Where the config came from (its file), for error messages."""
        return self._source

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _chains(cls, value: Any) -> Any:
        if isinstance(value, dict):  # a single fallback may be written without a list
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _names_exist(self) -> PilothouseConfig:
        served = {m.name for m in self.models}
        for model, chain in self.fallbacks.items():
            for target in (model, *chain):
                if target not in served:
                    raise ValueError(f"fallbacks.{model} names {target!r}, which no model entry serves")
        for index, cascade in enumerate(self.cascades):
            where = f"cascades[{index}] ({cascade.name})"
            if cascade.name in served:
                raise ValueError(f"{where}: {cascade.name!r} is already a model name")
            for model in cascade.models:
                if model not in served:
                    raise ValueError(f"{where}: no model entry serves {model!r}")
            if cascade.judge is not None and cascade.judge not in served:
                raise ValueError(f"{where}: no model entry serves the judge {cascade.judge!r}")
        patterns = [name for name in served if "*" in name]
        for alias, target in self.aliases.items():
            if alias in served:
                raise ValueError(f"aliases.{alias}: {alias!r} is already a model name")
            if target not in served and not any(fnmatch.fnmatchcase(target, p) for p in patterns):
                raise ValueError(f"aliases.{alias} names {target!r}, which no model entry serves")
        check_guardrails(self.guardrails, served, {c.name for c in self.cascades})
        return self
