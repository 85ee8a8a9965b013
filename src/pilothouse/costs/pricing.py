"""Cost arithmetic: usage x price row -> line items in USD. Pure, no I/O.

Usage counts each token once (see :class:`pilothouse.domain.traces.Usage`): ``input`` excludes cache
reads and writes, ``output`` includes ``reasoning``. Line items: ``input``, ``cache_read``,
``cache_write``, ``output`` (visible output) and ``reasoning``; an item appears when it has tokens
(``input`` and ``output`` always). Long-context prices apply to the whole call when its prompt is longer
than the row's threshold, as OpenAI, Anthropic and Google bill them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from pilothouse.costs.catalogue import PriceCatalogue, PriceRow
from pilothouse.domain.money import Money
from pilothouse.domain.traces import Cost, Observation, Status, Usage, bounded_usage

_PICO_PER_TOKEN = 10**6  # a price per 1M tokens in USD is this many pico-dollars per token


@dataclass(frozen=True, slots=True)
class Rates:
    """What one token of each kind costs, for one call (long-context tier already chosen): pico-dollars
    per token times ``scale``, as exact integers (``scale`` is 1 for any price with up to six decimals
    per 1M tokens; a price with more decimals, or an hourly price's per-token rate, raises it to a
    power of ten). Integers keep the cost of a call exact and cheap to compute on the ingest path."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int
    scale: int = 1

    def cost(self, tokens: int, rate: int) -> Money:
        """``tokens`` at ``rate`` (one of these fields), rounded to the pico-dollar (Money's rule)."""
        if self.scale == 1:
            return Money(tokens * rate)
        return Money.from_ratio(tokens * rate, self.scale)


# (id(row), long) -> (row, rates): rows are few and live as long as their catalogue; the row is kept so
# that its id is not reused while the entry exists.
_RATES: dict[tuple[int, bool], tuple[PriceRow, Rates]] = {}


def rates_for(row: PriceRow, prompt_tokens: int) -> Rates:
    """The per-token rates a call with ``prompt_tokens`` prompt tokens pays."""
    long = row.long_context_threshold is not None and prompt_tokens > row.long_context_threshold
    hit = _RATES.get((id(row), long))
    if hit is not None and hit[0] is row:
        return hit[1]
    rates = _rates(row, long)
    if len(_RATES) < 10_000:
        _RATES[(id(row), long)] = (row, rates)
    return rates


def _rates(row: PriceRow, long: bool) -> Rates:
    input_price = (row.input_long if long and row.input_long is not None else None) or row.input
    output_price = (row.output_long if long and row.output_long is not None else None) or row.output
    cache_read = row.cache_read_long if long and row.cache_read_long is not None else row.cache_read
    cache_write = row.cache_write_long if long and row.cache_write_long is not None else row.cache_write
    # A price is the decimal it was written as (its shortest repr): 0.0375 per 1M tokens is 37,500
    # pico-dollars per token exactly, not the float's 37,500.0000000000027.
    prices = [
        Decimal(repr(float(price))) * _PICO_PER_TOKEN
        for price in (
            input_price,
            output_price,
            input_price if cache_read is None else cache_read,
            input_price if cache_write is None else cache_write,
            output_price if row.reasoning is None else row.reasoning,
        )
    ]
    scale = 10 ** max(_decimals(p) for p in prices)
    input_rate, output_rate, cache_read, cache_write, reasoning = (int(p * scale) for p in prices)
    return Rates(input_rate, output_rate, cache_read, cache_write, reasoning, scale)


def _decimals(value: Decimal) -> int:
    """How many decimals a finite decimal needs (0 for a whole number)."""
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


GATEWAY_CACHE = "cache"  # the price version of a call the gateway's cache answered: free, saving its price


def price_usage(usage: Usage, row: PriceRow) -> Cost:
    """The cost of ``usage`` at ``row``'s prices, with the row's version: each line item is its tokens
    times its rate, rounded to the pico-dollar. Never negative: a count below 0 (stored before counts
    were bounded) prices as 0."""
    if min(usage.input, usage.output, usage.cache_read, usage.cache_write, usage.reasoning) < 0:
        usage = bounded_usage(usage)[0]
    rates = rates_for(row, usage.input_total)
    output, reasoning = usage.output, usage.reasoning
    if reasoning > output:
        reasoning = output
    cost = rates.cost
    items = {"input": cost(usage.input, rates.input), "output": cost(output - reasoning, rates.output)}
    saved = Money.ZERO
    if usage.cache_read:
        items["cache_read"] = cost(usage.cache_read, rates.cache_read)
        if rates.input > rates.cache_read:
            saved = cost(usage.cache_read, rates.input - rates.cache_read)
    if usage.cache_write:
        items["cache_write"] = cost(usage.cache_write, rates.cache_write)
    if reasoning:
        items["reasoning"] = cost(reasoning, rates.reasoning)
    return Cost(items, row.version, saved)


def worst_case_cost(row: PriceRow, prompt_tokens: int, max_output_tokens: int) -> Money:
    """An upper bound of a call's cost: every prompt token at the uncached rate (or the cache-write
    rate when that is dearer) and ``max_output_tokens`` at the dearer of the output and reasoning
    rates."""
    rates = rates_for(row, prompt_tokens)
    return rates.cost(prompt_tokens, max(rates.input, rates.cache_write)) + rates.cost(
        max_output_tokens, max(rates.output, rates.reasoning)
    )


def estimate_prompt_tokens(request: dict[str, Any]) -> int:
    """An upper estimate of a chat or embeddings request's prompt tokens, without a tokenizer: half
    the UTF-8 bytes of its messages (tokens average 3-4 bytes of English, about 3 of CJK) plus the
    chat template's few tokens per message."""
    payload = request.get("messages", request.get("input"))
    if payload is None:
        return 0
    size = len(orjson.dumps(payload)) + len(orjson.dumps(request.get("tools") or []))
    count = len(payload) if isinstance(payload, list) else 1
    return size // 2 + 8 * count


def max_output_tokens(request: dict[str, Any], row: PriceRow) -> int:
    """The most output tokens a request can produce: its own cap, else the model's output limit (else
    16,384), times the number of choices."""
    cap = request.get("max_completion_tokens") or request.get("max_tokens")
    if not isinstance(cap, int) or cap <= 0:
        cap = row.max_output_tokens or 16_384
    choices = request.get("n")
    return cap * (choices if isinstance(choices, int) and choices > 0 else 1)


class Pricer:
    """Prices observations with a catalogue: the one place gateway calls, SDK spans and OTLP spans get
    their cost, so all three agree."""

    def __init__(self, catalogue: PriceCatalogue) -> None:
        self.catalogue = catalogue

    def row_for(self, provider: str | None, model: str | None, at_ns: int | None = None) -> PriceRow | None:
        """The price row for a model at a time (ns since the epoch; default now)."""
        return self.catalogue.lookup(provider, model, at_ns=at_ns)

    def cost(
        self, provider: str | None, model: str | None, usage: Usage, at_ns: int | None = None
    ) -> Cost | None:
        """The cost of a call, or None when the model has no price (never 0 for unknown)."""
        row = self.row_for(provider, model, at_ns)
        return None if row is None else price_usage(usage, row)

    def call_cost(
        self, provider: str | None, upstream_model: str | None, served_model: str | None, usage: Usage
    ) -> Cost | None:
        """The cost of a gateway call: the deployment's upstream model id is the price key (custom
        prices are set on it), then the model the upstream says it served (a dated snapshot, say)."""
        return self.cost(provider, upstream_model, usage) or self.cost(provider, served_model, usage)

    def price_observation(self, observation: Observation) -> None:
        """Set the cost of a model call that has none yet (served model first, then requested)."""
        if observation.cost is not None or not observation.kind.is_model_call:
            return
        if observation.usage.is_empty and observation.status is not Status.ERROR:
            return  # no usage reported: the cost is unknown, not 0 (a failed call with no tokens is 0)
        for model in (observation.model, observation.request_model):
            row = self.row_for(observation.provider, model, observation.start_ns)
            if row is not None:
                observation.cost = price_usage(observation.usage, row)
                return
