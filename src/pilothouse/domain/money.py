"""Money: an amount of US dollars, exact to the pico-dollar. The one money type of Pilothouse.

Every amount (the cost of a call and its line items, what caching saved, trace totals, rollup sums,
budget limits, spend and reservations, report totals, eval costs) is a :class:`Money`. Rates are not
amounts: catalogue prices (USD per 1M tokens) and a self-hosted server's hourly price stay numbers,
and what a call costs at a rate becomes Money by rule 2.

The rules, each written once, here:

1. **Unit.** An amount is a whole number of pico-dollars (10^-12 USD): :attr:`Money.pico`. Sums,
   differences and comparisons are integer arithmetic, so exact: a million calls of $0.00018 add up
   to $180 exactly, and a budget of $1.00 holds twenty calls of $0.05. A catalogue price with up to
   six decimals per 1M tokens is a whole number of pico-dollars per token, so the cost of any call at
   such a price is exact too.
2. **Rounding.** A value that is not a whole number of pico-dollars (a float, decimal text with more
   than twelve decimals, tokens x a rate, an average, a share, a run-rate) is rounded once, from its
   exact value, to the nearest pico-dollar, ties to even: :meth:`Money.from_usd`,
   :meth:`Money.from_ratio`, ``*`` and ``/``.
3. **For people** (CLI, web UI, error messages): :meth:`Money.display`. Amounts of $1 or more with two
   decimals and thousands separators (``$12.34``, ``$1,234.56``); smaller ones with three significant
   digits and at least two decimals (``$0.000180``, ``$0.0123``, ``$0.500``, ``$0.000000000001``);
   zero ``$0.00``; a negative amount (a refund, a difference) with a leading minus (``-$0.25``).
   Rounded half to even from the exact amount.
4. **For machines** (API JSON numbers, the ``x-pilothouse-cost-usd`` header, ``--json`` output):
   ``str(money)``, the exact decimal with no exponent and no trailing zeros (``0.00018``, ``12.5``,
   ``0``, ``-0.25``). :meth:`Money.from_usd` reads it back exactly.
5. **Floats at the edges.** :attr:`Money.usd` is the nearest float64, for float columns and charts;
   ``Money.from_usd(money.usd) == money`` for any amount below $8,192 (where a float64 resolves
   better than a pico-dollar).

A Money is immutable (``pico`` is ``Final`` for the type checker; there is no run-time guard, so that
making one stays a single attribute store: the ingest path makes several per span).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import ClassVar, Final, final

__all__ = ["Money"]

PICO_PER_USD: Final = 10**12
_FAST_ROUND_LIMIT = 2**50  # below it, a float product is within 1/8 of the exact one
_INF = float("inf")
_LARGEST_DIGIT = 30  # text over 10^31 USD is no amount (and 1e999999999 would be a huge integer)


def _div_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (denominator > 0) to the nearest integer, ties to even."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient & 1):
        quotient += 1
    return quotient


def _round_scaled(pico: int, factor: float | Fraction) -> int:
    """``pico x factor`` to the nearest integer, ties to even, from the exact product. Fast in floats
    where they are exact enough to tell (the usual case), else with fractions."""
    if -_FAST_ROUND_LIMIT < pico < _FAST_ROUND_LIMIT and isinstance(factor, float):
        scaled = pico * factor  # one rounding, of at most an eighth below 2^50
        if -_FAST_ROUND_LIMIT < scaled < _FAST_ROUND_LIMIT:
            nearest = round(scaled)
            if abs(scaled - nearest) < 0.375:  # not near a tie: the exact product rounds the same
                return nearest
    return round(pico * Fraction(factor))  # Fraction rounds ties to even


def _group(digits: str) -> str:
    """``1234567`` -> ``1,234,567``."""
    head = len(digits) % 3 or 3
    return ",".join([digits[:head], *(digits[i : i + 3] for i in range(head, len(digits), 3))])


@final
class Money:
    """An amount of US dollars: a whole number of pico-dollars. See the module for the rules."""

    __slots__ = ("pico",)
    ZERO: ClassVar[Money]

    def __init__(self, pico: int) -> None:
        self.pico: Final[int] = pico

    # -- making one (rule 2) -------------------------------------------------------------------------

    @classmethod
    def from_usd(cls, value: float | int | str | Decimal) -> Money:
        """An amount of USD given as a number or decimal text (``"0.00018"``, ``"-1e-6"``; a ``$`` and
        thousands separators are allowed), rounded to the nearest pico-dollar, ties to even. Raises
        ``ValueError`` for text that is not a number, for NaN or infinity, and for decimals of 10^31
        or more."""
        if isinstance(value, float):
            if value != value or value in (_INF, -_INF):
                raise ValueError(f"not an amount of money: {value!r}")
            return cls(_round_scaled(PICO_PER_USD, value))
        if isinstance(value, bool):
            raise TypeError("a bool is not an amount of money")
        if isinstance(value, int):
            return cls(value * PICO_PER_USD)
        if isinstance(value, str):
            text = value.strip()
            sign = text[:1] if text[:1] in ("+", "-") else ""
            try:
                value = Decimal(sign + text[len(sign) :].removeprefix("$").replace(",", ""))
            except InvalidOperation:
                raise ValueError(f"not an amount of money: {value!r}") from None
        if not value.is_finite() or value.adjusted() > _LARGEST_DIGIT:
            raise ValueError(f"not an amount of money: {value!r}")
        if value.adjusted() < -13:  # under 1e-13: rounds to 0 (and 1e-999999999 costs no bignum)
            return cls(0)
        return cls(round(Fraction(value) * PICO_PER_USD))

    @classmethod
    def from_ratio(cls, numerator: int, denominator: int) -> Money:
        """``numerator / denominator`` pico-dollars, rounded to the nearest pico-dollar, ties to even
        (the cost of tokens at a rate that is not a whole number of pico-dollars per token)."""
        if denominator < 0:
            numerator, denominator = -numerator, -denominator
        return cls(_div_half_even(numerator, denominator))

    @classmethod
    def sum(cls, amounts: Iterable[Money]) -> Money:
        """The exact sum (``Money.ZERO`` for none)."""
        return cls(sum([m.pico for m in amounts]))

    # -- arithmetic (exact, or rule 2) ----------------------------------------------------------------

    def __add__(self, other: Money) -> Money:
        if other.__class__ is not Money:
            return NotImplemented
        return Money(self.pico + other.pico)

    def __sub__(self, other: Money) -> Money:
        if other.__class__ is not Money:
            return NotImplemented
        return Money(self.pico - other.pico)

    def __neg__(self) -> Money:
        return Money(-self.pico)

    def __abs__(self) -> Money:
        return Money(abs(self.pico))

    def __mul__(self, factor: int | float) -> Money:
        """Times a count (exact) or a factor (a weight, a run-rate's scale; rounded by rule 2)."""
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            return NotImplemented
        if isinstance(factor, int):
            return Money(self.pico * factor)
        return Money(_round_scaled(self.pico, factor))

    __rmul__ = __mul__

    def __truediv__(self, other: int | float) -> Money:
        """Divided by a count or a factor (an average; rounded by rule 2). :meth:`ratio` divides by an
        amount."""
        if isinstance(other, bool) or not isinstance(other, int | float):
            return NotImplemented
        if isinstance(other, int):
            return Money.from_ratio(self.pico, other)
        return Money(_round_scaled(self.pico, 1 / Fraction(other)))

    def ratio(self, other: Money) -> float:
        """This amount as a share of ``other`` (spend over a limit); ``ZeroDivisionError`` for zero."""
        return self.pico / other.pico

    # -- comparing (exact) ---------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and self.pico == other.pico

    def __hash__(self) -> int:
        return hash(self.pico)

    def __lt__(self, other: Money) -> bool:
        if other.__class__ is not Money:
            return NotImplemented
        return self.pico < other.pico

    def __le__(self, other: Money) -> bool:
        if other.__class__ is not Money:
            return NotImplemented
        return self.pico <= other.pico

    def __gt__(self, other: Money) -> bool:
        if other.__class__ is not Money:
            return NotImplemented
        return self.pico > other.pico

    def __ge__(self, other: Money) -> bool:
        if other.__class__ is not Money:
            return NotImplemented
        return self.pico >= other.pico

    def __bool__(self) -> bool:
        return self.pico != 0

    # -- text and floats (rules 3, 4, 5) --------------------------------------------------------------

    @property
    def usd(self) -> float:
        """The nearest float64 (for float columns and charts; rule 5)."""
        return self.pico / PICO_PER_USD

    def __str__(self) -> str:
        """The exact decimal for machines: ``0.00018``, ``12.5``, ``0``, ``-0.25`` (rule 4)."""
        pico = self.pico
        sign = "-" if pico < 0 else ""
        whole, fraction = divmod(abs(pico), PICO_PER_USD)
        if not fraction:
            return f"{sign}{whole}"
        return f"{sign}{whole}.{fraction:012d}".rstrip("0")

    def __repr__(self) -> str:
        return f"Money('{self}')"

    def display(self) -> str:
        """The amount for people: ``$12.34``, ``$1,234.56``, ``$0.000180``, ``$0.00``, ``-$0.25``
        (rule 3)."""
        pico = abs(self.pico)
        sign = "-" if self.pico < 0 else ""
        if pico >= PICO_PER_USD or pico == 0:
            decimals = 2
        else:  # three significant digits: as many decimals as the first one's place, plus two
            decimals = min(12, 15 - len(str(pico)))
            if len(str(_div_half_even(pico, 10 ** (12 - decimals)))) > 3:
                decimals -= 1  # rounding carried into a new digit ($0.0009996 -> $0.00100)
        units = _div_half_even(pico, 10 ** (12 - decimals))
        whole, fraction = divmod(units, 10**decimals)
        return f"{sign}${_group(str(whole))}.{fraction:0{decimals}d}"


Money.ZERO = Money(0)
