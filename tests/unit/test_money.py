"""Money, the one money type: its unit, its one rounding rule, its formats for people and machines."""

from __future__ import annotations

import copy
import json
import random
from decimal import Decimal
from fractions import Fraction

import pytest

from pilothouse.domain.money import Money

PICO = 10**12


def usd(text: str) -> Money:
    return Money.from_usd(text)


# -- making amounts: the one rounding rule --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "pico"),
    [
        (0.00018, 180_000_000),  # the float is 0.000179999999999999997...: the nearest pico-dollar
        (0.1 + 0.2, 300_000_000_000),  # 0.30000000000000004
        (1e-12, 1),
        (4e-13, 0),
        (6e-13, 1),
        (-0.25, -250_000_000_000),
        (0.0, 0),
        (-0.0, 0),
        (3, 3 * PICO),
        (1e20, 10**32),  # beyond the float fast path: from the exact value
        (8191.999999999999, 8_191_999_999_999_999),
    ],
)
def test_from_usd_rounds_to_the_nearest_pico_dollar(value: float, pico: int) -> None:
    assert Money.from_usd(value).pico == pico


@pytest.mark.parametrize(
    ("text", "pico"),
    [
        ("0.00018", 180_000_000),
        ("12.5", 12_500_000_000_000),
        ("$1,234.56", 1_234_560_000_000_000),
        ("-$0.25", -250_000_000_000),
        ("+0.1", 100_000_000_000),
        ("1e-6", 1_000_000),
        (" 7 ", 7 * PICO),
        ("0.0000000000005", 0),  # a tie: to the even neighbour, 0
        ("0.0000000000015", 2),  # a tie: to 2
        ("0.0000000000025", 2),  # a tie: to 2
        ("-0.0000000000015", -2),
        ("0.00000000000049999", 0),
        ("123456789012.123456789012", 123_456_789_012_123_456_789_012),  # exact beyond a float's reach
    ],
)
def test_from_usd_reads_decimal_text_exactly(text: str, pico: int) -> None:
    assert Money.from_usd(text).pico == pico


def test_text_too_small_to_matter_reads_zero_at_once() -> None:
    assert Money.from_usd("1e-999999999") == Money.ZERO and Money.from_usd("-4e-13") == Money.ZERO
    assert Money.from_usd("1e30").pico == 10**42


def test_ties_round_to_even_from_the_exact_value_of_a_float() -> None:
    # 2.5e-12 as a float is a little under 2.5 pico-dollars: 2, as its exact value says
    assert Fraction(2.5e-12) * PICO < Fraction(5, 2) and Money.from_usd(2.5e-12).pico == 2
    assert Money.from_usd(Decimal("2.5e-12")).pico == 2 and Money.from_usd(Decimal("3.5e-12")).pico == 4
    assert Money.from_ratio(5, 2).pico == 2 and Money.from_ratio(7, 2).pico == 4
    assert Money.from_ratio(-5, 2).pico == -2 and Money.from_ratio(5, -2).pico == -2
    assert Money.from_ratio(2, 3).pico == 1 and Money.from_ratio(1, 3).pico == 0


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", "NaN", "inf", "$", "--1", "1e999999999", "1e31"])
def test_from_usd_refuses_what_is_not_an_amount(bad: str) -> None:
    with pytest.raises(ValueError):
        Money.from_usd(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_from_usd_refuses_nan_and_infinity(bad: float) -> None:
    with pytest.raises(ValueError):
        Money.from_usd(bad)
    with pytest.raises(TypeError):
        Money.from_usd(True)


# -- arithmetic and comparison: exact -------------------------------------------------------------------


def test_sums_of_many_small_amounts_are_exact() -> None:
    small = usd("0.00018")
    assert Money.sum([small] * 1_000_000) == usd("180")
    total = Money.ZERO
    for _ in range(10):
        total += usd("0.1")
    assert total == usd("1") and str(total) == "1"  # floats say 0.9999999999999999
    assert usd("0.1") + usd("0.2") == usd("0.3")
    assert Money.sum([]) == Money.ZERO


def test_random_sums_agree_with_decimal_arithmetic() -> None:
    rng = random.Random(7)
    texts = [f"{rng.randrange(10**9)}e-{rng.randrange(4, 13)}" for _ in range(5000)]
    exact = sum((Decimal(t) for t in texts), Decimal(0))
    assert Money.sum(usd(t) for t in texts) == Money.from_usd(exact)


def test_negative_amounts_refunds_and_differences() -> None:
    before, after = usd("0.30"), usd("0.25")
    diff = after - before
    assert diff == usd("-0.05") and -diff == usd("0.05") and abs(diff) == usd("0.05")
    assert diff < Money.ZERO < -diff and str(diff) == "-0.05" and diff.display() == "-$0.0500"


def test_comparisons_are_exact_and_only_between_amounts() -> None:
    limit = usd("1.00")
    assert usd("0.999999999999") < limit <= usd("1") < usd("1.000000000001")
    assert usd("1") == limit and hash(usd("1")) == hash(limit) and len({usd("1"), limit}) == 1
    assert Money.ZERO != 0 and usd("1") != 1.0  # an amount is not a number of unknown unit
    with pytest.raises(TypeError):
        assert usd("1") < 2  # type: ignore[operator]
    with pytest.raises(TypeError):
        usd("1") + 0.5  # type: ignore[operator]
    assert not Money.ZERO and usd("0.000000000001")


def test_scaling_and_averages_round_once() -> None:
    assert usd("0.10") * 3 == usd("0.3") and 3 * usd("0.10") == usd("0.3")
    assert usd("1") * 0.5 == usd("0.5") and usd("1") / 3 == usd("0.333333333333")
    assert usd("2") / 3 == usd("0.666666666667") and usd("1") / 3.0 == usd("0.333333333333")
    assert Money(3) * 0.5 == Money(2) and Money(5) * 0.5 == Money(2)  # ties to even
    assert usd("0.3").ratio(usd("1.2")) == 0.25
    with pytest.raises(ZeroDivisionError):
        usd("1") / 0


def test_very_large_and_very_small_amounts() -> None:
    huge = usd("12345678901234567890.123456789012")
    assert huge + Money(1) - Money(1) == huge and str(huge) == "12345678901234567890.123456789012"
    assert huge.display() == "$12,345,678,901,234,567,890.12"
    tiny = Money(1)
    assert str(tiny) == "0.000000000001" and tiny.display() == "$0.000000000001"
    assert Money.from_usd(str(tiny)) == tiny


def test_an_amount_is_immutable_and_copies_as_itself() -> None:
    amount = usd("0.00018")
    assert copy.deepcopy(amount) == amount and copy.copy(amount) == amount
    assert repr(amount) == "Money('0.00018')"


# -- formats --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("0", "$0.00"),
        ("0.00018", "$0.000180"),
        ("0.000412", "$0.000412"),
        ("0.0123", "$0.0123"),
        ("0.5", "$0.500"),
        ("0.999", "$0.999"),
        ("0.9996", "$1.00"),  # rounding carries into dollars
        ("0.0009996", "$0.00100"),  # ... or into the next digit
        ("0.00012345", "$0.000123"),
        ("0.00012355", "$0.000124"),  # past the half: up
        ("0.0001235", "$0.000124"),  # a tie: to the even neighbour
        ("0.0001245", "$0.000124"),  # a tie: to the even neighbour
        ("1", "$1.00"),
        ("12.345", "$12.34"),  # a tie: to the even neighbour
        ("12.355", "$12.36"),
        ("1234.5", "$1,234.50"),
        ("1234567.891", "$1,234,567.89"),
        ("-0.25", "-$0.250"),
        ("-1234.5", "-$1,234.50"),
    ],
)
def test_the_one_format_for_people(text: str, shown: str) -> None:
    assert usd(text).display() == shown


@pytest.mark.parametrize(
    ("text", "machine"),
    [
        ("0", "0"),
        ("0.00018", "0.00018"),
        ("12.50", "12.5"),
        ("100", "100"),
        ("-0.25", "-0.25"),
        ("0.000000000001", "0.000000000001"),
        ("1e-5", "0.00001"),
    ],
)
def test_the_one_format_for_machines_reads_back_exactly(text: str, machine: str) -> None:
    amount = usd(text)
    assert str(amount) == machine and Money.from_usd(machine) == amount
    assert json.loads(machine) == amount.usd  # a JSON number of the same value


def test_floats_round_trip_below_8192_dollars() -> None:
    rng = random.Random(11)
    for _ in range(20_000):
        amount = Money(rng.randrange(-(2**43), 2**43))  # |amount| < $8,796
        if abs(amount.pico) < 8192 * PICO:
            assert Money.from_usd(amount.usd) == amount
    assert Money.from_usd(usd("0.00018").usd) == usd("0.00018")
