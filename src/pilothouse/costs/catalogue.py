"""The price catalogue: one row per provider x model x effective date, from the packaged ``prices.csv``
plus the custom prices of a gateway config (self-hosted deployments, negotiated rates).

A price correction is a new row with a new ``effective_from``, never an edit of history, so a stored
cost names the exact row it used (:attr:`PriceRow.version`) and ``pilothouse costs recompute`` can say
what changed.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

from pilothouse.config import PriceSpec

# Per 1M tokens unless the name says otherwise; None = not offered / not applicable.
PRICE_COLUMNS = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "reasoning",
    "batch_discount",
    "long_context_threshold",
    "input_long",
    "output_long",
    "cache_read_long",
    "cache_write_long",
    "image_input",
    "audio_input",
    "audio_output",
    "context_window",
    "max_output_tokens",
)
COLUMNS = ("provider", "model", "effective_from", *PRICE_COLUMNS, "source_url", "aliases")

# Provider names used by OpenTelemetry (gen_ai.system / gen_ai.provider.name), LiteLLM and others,
# mapped to the catalogue's slugs.
PROVIDER_ALIASES = {
    "azure": "openai",
    "azure.ai.openai": "openai",
    "az.ai.openai": "openai",
    "openai": "openai",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "google": "google",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "x_ai": "xai",
    "xai": "xai",
    "together": "together",
    "together_ai": "together",
    "groq": "groq",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
}

_DATED = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-latest)$")


class CatalogueError(ValueError):
    """A price row is malformed; the message names the row and the column."""


@dataclass(frozen=True, slots=True)
class PriceRow:
    """Prices of one model from one date on (USD per 1M tokens unless the name says otherwise)."""

    provider: str
    model: str
    effective_from: date
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    batch_discount: float | None = None
    long_context_threshold: int | None = None
    input_long: float | None = None
    output_long: float | None = None
    cache_read_long: float | None = None
    cache_write_long: float | None = None
    image_input: float | None = None  # USD per image
    audio_input: float | None = None
    audio_output: float | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    source_url: str = ""
    aliases: tuple[str, ...] = ()
    source: str = "catalogue"  # "catalogue" or "config:<deployment name>"
    # Identifies the row a cost was computed with, e.g. ``openai/gpt-4o-mini@2024-07-18`` (set once:
    # every priced span reads it).
    version: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if self.source != "catalogue":
            version = f"{self.source}/{self.model}"
        else:
            version = f"{self.provider}/{self.model}@{self.effective_from.isoformat()}"
        object.__setattr__(self, "version", version)

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON values."""
        out: dict[str, Any] = {"provider": self.provider, "model": self.model}
        out["effective_from"] = self.effective_from.isoformat()
        for name in PRICE_COLUMNS:
            out[name] = getattr(self, name)
        out.update(
            source_url=self.source_url, aliases=list(self.aliases), source=self.source, version=self.version
        )
        return out


def _number(text: str, where: str, column: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise CatalogueError(f"{where}: {column} is not a number: {text!r}") from None
    if value < 0:
        raise CatalogueError(f"{where}: {column} is negative")
    return value


def parse_rows(text: str, source: str = "prices.csv") -> list[PriceRow]:
    """Rows of a catalogue CSV (header :data:`COLUMNS`)."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise CatalogueError(f"{source}: the header must be {','.join(COLUMNS)}")
    rows = []
    for line, record in enumerate(reader, start=2):
        where = f"{source}:{line}"
        try:
            effective = date.fromisoformat(record["effective_from"].strip())
        except ValueError:
            raise CatalogueError(f"{where}: effective_from must be YYYY-MM-DD") from None
        values: dict[str, Any] = {}
        for column in PRICE_COLUMNS:
            number = _number(record[column] or "", where, column)
            is_count = column in ("long_context_threshold", "context_window", "max_output_tokens")
            values[column] = int(number) if is_count and number is not None else number
        if values["input"] is None or values["output"] is None:
            # Embedding models bill input only: output is 0, not unknown.
            values["input"] = values["input"] or 0.0
            values["output"] = values["output"] or 0.0
        rows.append(
            PriceRow(
                provider=record["provider"].strip().lower(),
                model=record["model"].strip(),
                effective_from=effective,
                source_url=(record["source_url"] or "").strip(),
                aliases=tuple(a.strip() for a in (record["aliases"] or "").split(";") if a.strip()),
                **values,
            )
        )
    return rows


def packaged_rows() -> list[PriceRow]:
    """The rows of the catalogue shipped in the package."""
    text = resources.files("pilothouse.costs").joinpath("prices.csv").read_text(encoding="utf-8")
    return parse_rows(text)


def _key(model: str) -> str:
    return model.strip().lower()


@dataclass
class PriceCatalogue:
    """Looks up the price row for a model at a time: by provider and model id, an alias, the id without
    a ``provider/`` prefix or a date suffix, or the model id alone when one provider has it.

    Custom rows (from a gateway config) win over the packaged ones at any date."""

    rows: list[PriceRow] = field(default_factory=list)
    custom: list[PriceRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_provider: dict[tuple[str, str], list[PriceRow]] = {}
        self._by_model: dict[str, list[PriceRow]] = {}
        for row in sorted(self.rows, key=lambda r: r.effective_from):
            for name in (row.model, *row.aliases):
                self._by_provider.setdefault((row.provider, _key(name)), []).append(row)
                self._by_model.setdefault(_key(name), []).append(row)
        self._custom = {(r.provider, _key(r.model)): r for r in self.custom}
        self._custom_by_model = {_key(r.model): r for r in self.custom}
        self._cache: dict[tuple[str | None, str], tuple[PriceRow, ...] | PriceRow | None] = {}

    @classmethod
    def packaged(cls, custom: Iterable[PriceRow] = ()) -> PriceCatalogue:
        """The shipped catalogue, with ``custom`` rows on top."""
        return cls(packaged_rows(), list(custom))

    def with_custom(self, custom: Iterable[PriceRow]) -> PriceCatalogue:
        """The same packaged rows with other custom rows."""
        return PriceCatalogue(self.rows, list(custom))

    def __iter__(self) -> Iterator[PriceRow]:
        return iter([*self.custom, *self.rows])

    @property
    def version(self) -> str:
        """The catalogue's version: the newest effective date it holds."""
        return max((r.effective_from for r in self.rows), default=date.min).isoformat()

    def _candidates(self, provider: str | None, model: str) -> tuple[PriceRow, ...] | PriceRow | None:
        slug = PROVIDER_ALIASES.get(provider.lower(), provider.lower()) if provider else None
        names = [_key(model)]
        if "/" in names[0] and names[0].split("/", 1)[0] in PROVIDER_ALIASES:
            names.append(names[0].split("/", 1)[1])  # litellm-style "openai/gpt-4o"
        names += [_DATED.sub("", n) for n in names if _DATED.search(n)]
        for name in names:
            if slug is not None and (custom := self._custom.get((slug, name))) is not None:
                return custom
            if slug is not None and (found := self._by_provider.get((slug, name))):
                return tuple(found)
        for name in names:
            if (custom := self._custom_by_model.get(name)) is not None:
                return custom
            found = self._by_model.get(name)
            if found and len({r.provider for r in found}) == 1:
                return tuple(found)
        return None

    def lookup(
        self, provider: str | None, model: str | None, at: datetime | None = None, at_ns: int | None = None
    ) -> PriceRow | None:
        """The row in effect at ``at`` (or ``at_ns``, ns since the epoch; default now) for the model, or
        None when it has no price."""
        if not model:
            return None
        cache_key = (provider, model)
        if cache_key in self._cache:
            found = self._cache[cache_key]
        else:
            if len(self._cache) > 10_000:  # model names come from clients: keep the memo bounded
                self._cache.clear()
            found = self._cache[cache_key] = self._candidates(provider, model)
        if found is None or isinstance(found, PriceRow):
            return found
        if len(found) == 1:  # one price in its history: no date to work out (the ingest hot path)
            return found[0]
        if at is None and at_ns:
            at = datetime.fromtimestamp(at_ns / 1e9, UTC)
        day = (at or datetime.now(UTC)).date()
        current = None
        for row in found:  # sorted by effective date
            if row.effective_from <= day:
                current = row
        return current or found[0]  # a call before the first known price: the launch price


def custom_price_row(price: PriceSpec, provider: str, model: str, name: str) -> PriceRow:
    """A deployment's price from the config (``models[].price``): per-1M-token prices, or a self-hosted
    server's cost per hour and measured throughput (price per token = hourly cost / tokens per hour)."""
    if price.per_hour_usd is not None:
        assert price.tokens_per_s is not None  # the config model requires it with per_hour_usd
        output = price.per_hour_usd / (price.tokens_per_s * 3600) * 1e6
        input_rate = price.input_tokens_per_s or price.tokens_per_s
        input_price = price.per_hour_usd / (input_rate * 3600) * 1e6
        return PriceRow(
            provider,
            model,
            date.min,
            input_price,
            output,
            max_output_tokens=price.max_output_tokens,
            source=f"config:{name}",
        )
    assert price.input is not None and price.output is not None  # required for per-token prices
    return PriceRow(
        provider,
        model,
        date.min,
        float(price.input),
        float(price.output),
        cache_read=price.cache_read,
        cache_write=price.cache_write,
        reasoning=price.reasoning,
        max_output_tokens=price.max_output_tokens,
        source=f"config:{name}",
    )
