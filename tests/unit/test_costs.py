"""Price catalogue lookups and cost arithmetic, checked against hand-computed values."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from pilothouse.costs.catalogue import COLUMNS, CatalogueError, PriceCatalogue, PriceRow, parse_rows
from pilothouse.costs.pricing import Pricer, price_usage, worst_case_cost
from pilothouse.domain.money import Money
from pilothouse.domain.traces import Observation, ObservationKind, Status, Usage

HEADER = ",".join(COLUMNS)
# provider,model,effective_from,input,output,cache_read,cache_write,reasoning,batch_discount,
# long_context_threshold,input_long,output_long,cache_read_long,cache_write_long,image_input,audio_input,
# audio_output,context_window,max_output_tokens,source_url,aliases
CSV = f"""{HEADER}
openai,gpt-x,2025-01-01,2.00,8.00,0.50,,,0.5,,,,,,,,,128000,16384,https://example.com/p,gpt-x-2025-01-01
openai,gpt-x,2025-06-01,1.00,4.00,0.25,,,0.5,,,,,,,,,128000,16384,https://example.com/p,gpt-x-2025-01-01
anthropic,claude-y,2025-03-01,3.00,15.00,0.30,3.75,,0.5,200000,6.00,22.50,0.60,7.50,,,,1000000,64000,https://example.com/a,
google,gem-z,2025-02-01,0.10,0.40,0.025,,0.80,,,,,,,,,,1000000,65536,https://example.com/g,
"""


def usd(text: str) -> Money:
    return Money.from_usd(text)


@pytest.fixture
def catalogue() -> PriceCatalogue:
    return PriceCatalogue(parse_rows(CSV, "test.csv"))


def test_lookup_picks_the_row_in_effect_at_the_time(catalogue: PriceCatalogue) -> None:
    old = catalogue.lookup("openai", "gpt-x", datetime(2025, 3, 1, tzinfo=UTC))
    new = catalogue.lookup("openai", "gpt-x", datetime(2025, 7, 1, tzinfo=UTC))
    assert old is not None and old.input == 2.0 and old.version == "openai/gpt-x@2025-01-01"
    assert new is not None and new.input == 1.0 and new.version == "openai/gpt-x@2025-06-01"
    before_launch = catalogue.lookup("openai", "gpt-x", datetime(2024, 1, 1, tzinfo=UTC))
    assert before_launch is old


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-x"),
        ("openai", "GPT-X"),
        ("openai", "gpt-x-2025-01-01"),  # an alias
        ("openai", "gpt-x-2025-09-30"),  # an unknown dated snapshot
        ("azure", "gpt-x"),  # provider names of other conventions
        (None, "openai/gpt-x"),  # litellm-style prefix
        (None, "gpt-x"),  # one provider has it
        ("sim", "gpt-x"),  # an unknown provider serving a known model id (an OpenAI-compatible host)
    ],
)
def test_lookup_normalises_names(catalogue: PriceCatalogue, provider: str | None, model: str) -> None:
    row = catalogue.lookup(provider, model, datetime(2025, 7, 1, tzinfo=UTC))
    assert row is not None and row.model == "gpt-x" and row.effective_from == date(2025, 6, 1)


def test_unknown_models_have_no_price(catalogue: PriceCatalogue) -> None:
    assert catalogue.lookup("openai", "no-such-model") is None
    assert catalogue.lookup(None, None) is None
    pricer = Pricer(catalogue)
    assert pricer.cost("openai", "no-such-model", Usage(input=10, output=10)) is None


def test_cost_line_items_by_hand(catalogue: PriceCatalogue) -> None:
    row = catalogue.lookup("openai", "gpt-x", datetime(2025, 7, 1, tzinfo=UTC))
    assert row is not None
    # 1,000 uncached input, 3,000 cached, 500 output of which 200 reasoning
    cost = price_usage(Usage(input=1000, cache_read=3000, output=500, reasoning=200), row)
    assert cost.items == {
        "input": usd("0.001"),  # 1,000 x $1.00 / 1M
        "cache_read": usd("0.00075"),  # 3,000 x $0.25 / 1M
        "output": usd("0.0012"),  # 300 x $4.00 / 1M
        "reasoning": usd("0.0008"),  # 200 x $4.00 / 1M
    }
    assert cost.total == usd("0.00375")  # exactly: 0.001 + 0.00075 + 0.0012 + 0.0008
    assert cost.price_version == "openai/gpt-x@2025-06-01"


def test_cache_writes_and_long_context_tier(catalogue: PriceCatalogue) -> None:
    row = catalogue.lookup("anthropic", "claude-y")
    assert row is not None
    short = price_usage(Usage(input=100_000, cache_write=50_000, cache_read=10_000, output=1000), row)
    assert short.items == {
        "input": usd("0.3"),
        "cache_write": usd("0.1875"),  # 50,000 x $3.75 / 1M
        "cache_read": usd("0.003"),  # 10,000 x $0.30 / 1M
        "output": usd("0.015"),
    }
    # 250k prompt tokens > 200k: every token of the call at the long-context prices
    long = price_usage(Usage(input=200_000, cache_write=40_000, cache_read=10_000, output=1000), row)
    assert long.items == {
        "input": usd("1.2"),
        "cache_write": usd("0.3"),  # 40,000 x $7.50 / 1M
        "cache_read": usd("0.006"),  # 10,000 x $0.60 / 1M
        "output": usd("0.0225"),
    }


def test_separate_reasoning_price_and_missing_cache_prices(catalogue: PriceCatalogue) -> None:
    row = catalogue.lookup("google", "gem-z")
    assert row is not None
    cost = price_usage(Usage(input=1000, output=1000, reasoning=600, cache_write=100), row)
    # reasoning at its own rate; a cache write with no listed price pays the input rate
    assert cost.items == {
        "input": usd("0.0001"),
        "output": usd("0.00016"),  # 400 x $0.40 / 1M
        "reasoning": usd("0.00048"),  # 600 x $0.80 / 1M
        "cache_write": usd("0.00001"),  # 100 x $0.10 / 1M
    }


def test_worst_case_and_cache_saving(catalogue: PriceCatalogue) -> None:
    row = catalogue.lookup("openai", "gpt-x")
    assert row is not None
    assert worst_case_cost(row, 1000, 500) == usd("0.003")  # 1,000 x $1 / 1M + 500 x $4 / 1M
    assert price_usage(Usage(input=10, cache_read=4000), row).saved == usd("0.003")  # 4,000 x $0.75 / 1M


def test_custom_rows_win_and_are_versioned_by_their_source() -> None:
    custom = PriceRow("openai", "gpt-x", date.min, 0.5, 0.5, source="config:my-vllm")
    catalogue = PriceCatalogue(parse_rows(CSV), [custom])
    row = catalogue.lookup("openai", "gpt-x")
    assert row is custom and row.version == "config:my-vllm/gpt-x"


def test_price_observation_skips_unknown_usage_and_prices_failures_at_zero(catalogue: PriceCatalogue) -> None:
    pricer = Pricer(catalogue)

    def call(status: Status, usage: Usage) -> Observation:
        return Observation(
            "t" * 32, "s" * 16, "chat", 1_750_000_000 * 10**9, 1_750_000_001 * 10**9,
            kind=ObservationKind.GENERATION, status=status, provider="openai", model="gpt-x", usage=usage,
        )  # fmt: skip

    ok = call(Status.OK, Usage(input=10, output=10))
    pricer.price_observation(ok)
    assert ok.cost is not None and ok.cost.total == usd("0.00005")
    no_usage = call(Status.OK, Usage())
    pricer.price_observation(no_usage)
    assert no_usage.cost is None  # unknown, not 0
    failed = call(Status.ERROR, Usage())
    pricer.price_observation(failed)
    assert failed.cost is not None and failed.cost.total == Money.ZERO


def test_rates_are_exact_decimals_and_finer_ones_round_once() -> None:
    # $0.0375 per 1M tokens is 37,500 pico-dollars a token, not the float's 37,500.0000000000027
    row = PriceRow("google", "flash", date.min, 0.0375, 0.15)
    cost = price_usage(Usage(input=3, output=1), row)
    assert cost.items == {"input": Money(112_500), "output": Money(150_000)}
    # an hourly price's rate has no end: each line item rounds once, to the nearest pico-dollar
    hourly = PriceRow("vllm", "m", date.min, 1 / 3, 1 / 3)
    cost = price_usage(Usage(input=1, output=2), hourly)
    assert cost.items == {"input": Money(333_333), "output": Money(666_667)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("provider,model\n", "header"),
        (f"{HEADER}\nopenai,m,2025-13-01,1,1" + "," * 18, "effective_from"),
        (f"{HEADER}\nopenai,m,2025-01-01,abc,1" + "," * 18, "input is not a number"),
        (f"{HEADER}\nopenai,m,2025-01-01,-1,1" + "," * 18, "negative"),
    ],
)
def test_malformed_rows_are_named(text: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        parse_rows(text, "bad.csv")
