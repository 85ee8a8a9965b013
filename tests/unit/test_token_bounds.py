"""Token counts are bounded wherever they enter (issue 21, class 5), and a cost is never negative."""

from __future__ import annotations

import math
from typing import Any

import pytest

from pilothouse.costs.catalogue import PriceCatalogue
from pilothouse.costs.pricing import price_usage
from pilothouse.domain.money import Money
from pilothouse.domain.traces import MAX_CALL_TOKENS, Usage, bounded_usage, token_count
from pilothouse.gateway.recording import checked_usage_from_openai


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (0, False)),
        (12, (12, False)),
        (12.0, (12, False)),
        ("12", (12, False)),
        (MAX_CALL_TOKENS, (MAX_CALL_TOKENS, False)),
        (-4_000_000, (0, True)),
        (10**15, (MAX_CALL_TOKENS, True)),
        (2**64 - 1, (MAX_CALL_TOKENS, True)),
        (1e30, (MAX_CALL_TOKENS, True)),
        (math.inf, (MAX_CALL_TOKENS, True)),
        (math.nan, (0, True)),
        (12.5, (12, True)),
        ("lots", (0, True)),
        ({"n": 1}, (0, True)),
        (True, (0, True)),
    ],
)
def test_token_count(value: Any, expected: tuple[int, bool]) -> None:
    assert token_count(value) == expected


def test_upstream_usage_is_bounded_and_flagged() -> None:
    usage, corrected = checked_usage_from_openai({"prompt_tokens": -4_000_000, "completion_tokens": 10**15})
    assert usage == Usage(0, MAX_CALL_TOKENS) and corrected
    usage, corrected = checked_usage_from_openai(
        {"prompt_tokens": 120, "completion_tokens": 12, "prompt_tokens_details": {"cached_tokens": 64}}
    )
    assert usage == Usage(56, 12, 64) and not corrected
    assert checked_usage_from_openai("lots") == (Usage(), True)
    assert checked_usage_from_openai({"prompt_tokens_details": 5}) == (Usage(), True)


def test_a_cost_is_never_negative() -> None:
    row = PriceCatalogue.packaged({}).lookup("openai", "gpt-4o")
    assert row is not None
    negative = Usage(-4_000_000, 5, -1, -1, -3)
    assert price_usage(negative, row).total == price_usage(Usage(0, 5), row).total >= Money.ZERO
    assert bounded_usage(negative) == (Usage(0, 5), True)
