"""Budget periods, scopes, alert thresholds and the in-process reservation ledger."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from pilothouse.domain.budgets import (
    Budget,
    BudgetPeriod,
    BudgetScope,
    applicable_budgets,
    crossed_thresholds,
    forecast_period_spend,
    parse_thresholds,
    period_end,
    period_start,
)
from pilothouse.domain.money import Money
from pilothouse.gateway.budgets import BudgetLedger, LedgerEntry, LocalBudgetLedger, RedisBudgetLedger
from tests.gateway.test_limits import redis_url  # noqa: F401  (fixture)

NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)  # a Thursday


def usd(text: str) -> Money:
    return Money.from_usd(text)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        (BudgetPeriod.DAY, datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC)),
        (BudgetPeriod.WEEK, datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)),
        (BudgetPeriod.MONTH, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        (BudgetPeriod.TOTAL, datetime(1970, 1, 1, tzinfo=UTC), None),
    ],
)
def test_periods(period: BudgetPeriod, start: datetime, end: datetime | None) -> None:
    assert period_start(period, NOW) == start
    assert period_end(period, NOW) == end


def test_december_rolls_into_the_next_year() -> None:
    new_year = datetime(2027, 1, 1, tzinfo=UTC)
    assert period_end(BudgetPeriod.MONTH, datetime(2026, 12, 31, 23, tzinfo=UTC)) == new_year


def _budget(scope: BudgetScope, value: str = "", project: str = "p") -> Budget:
    return Budget("b-" + scope.value + value, project, scope, value, BudgetPeriod.DAY, usd("1"))


def test_which_budgets_a_request_counts_against() -> None:
    budgets = [
        _budget(BudgetScope.PROJECT),
        _budget(BudgetScope.PROJECT, project="other"),
        _budget(BudgetScope.KEY, "k1"),
        _budget(BudgetScope.KEY, "k2"),
        _budget(BudgetScope.USER, "alice"),
        _budget(BudgetScope.TAG, "batch"),
    ]
    found = applicable_budgets(budgets, "p", "k1", "alice", ["batch", "x"])
    assert [b.id for b in found] == ["b-project", "b-keyk1", "b-useralice", "b-tagbatch"]
    assert [b.id for b in applicable_budgets(budgets, "p", None, None, [])] == ["b-project"]


def test_thresholds_and_forecast() -> None:
    budget = Budget("b", "p", BudgetScope.PROJECT, "", BudgetPeriod.MONTH, usd("10"))
    assert crossed_thresholds(budget, usd("4"), usd("8.5")) == [0.5, 0.8]
    assert crossed_thresholds(budget, usd("8.5"), usd("9")) == []
    assert crossed_thresholds(budget, usd("9"), usd("10")) == [1.0]
    assert crossed_thresholds(budget, usd("9"), usd("9.999999999999")) == []  # a pico-dollar short
    assert parse_thresholds("50, 80,100") == (0.5, 0.8, 1.0)
    assert parse_thresholds("0.9") == (0.9,)
    with pytest.raises(ValueError):
        parse_thresholds("-5")
    # 25.6 days into a 30-day month with $12.80 spent: about $15 by the end of it
    forecast = forecast_period_spend(usd("12.8"), BudgetPeriod.MONTH, NOW)
    assert forecast == usd("12.8") * (30 / (25 + 15.5 / 24))
    assert forecast is not None and forecast.display() == "$14.97"
    assert forecast_period_spend(usd("1"), BudgetPeriod.TOTAL, NOW) is None


@pytest.fixture(params=["local", "redis"])
def ledger(request: pytest.FixtureRequest) -> BudgetLedger:
    if request.param == "local":
        return LocalBudgetLedger()
    return RedisBudgetLedger(request.getfixturevalue("redis_url"), prefix=f"test:{uuid.uuid4().hex}")


def test_ledger_reserves_all_or_nothing_and_settles(ledger: BudgetLedger) -> None:
    async def run() -> None:
        a, b = LedgerEntry("a", usd("1")), LedgerEntry("b", usd("0.3"))
        soft = LedgerEntry("s", None)
        await ledger.ensure("a", usd("0.5"))
        await ledger.ensure("a", usd("0.2"))  # the database lags behind: never lowered
        for entry in (b, soft):
            await ledger.ensure(entry.key, Money.ZERO)
        assert await ledger.reserve([a, soft], usd("0.4"), "r1", 60) == -1
        assert await ledger.usage("a") == (usd("0.5"), usd("0.4"))
        assert await ledger.reserve([a], usd("0.2"), "r2", 60) == 0  # 0.5 + 0.4 + 0.2 > 1.0
        assert await ledger.reserve([soft, b], usd("0.31"), "r3", 60) == 1  # b cannot take it: nothing held
        assert await ledger.usage("s") == (Money.ZERO, usd("0.4"))
        moves = await ledger.settle([a, soft], "r1", usd("0.1"))
        assert moves == [(usd("0.5"), usd("0.6")), (Money.ZERO, usd("0.1"))]
        assert await ledger.usage("a") == (usd("0.6"), Money.ZERO)
        await ledger.ensure("a", usd("0.7"))  # the database has more (settlements lost): raised to it
        assert await ledger.usage("a") == (usd("0.7"), Money.ZERO)
        assert await ledger.first_alert("a", 0.5) and not await ledger.first_alert("a", 0.5)
        await ledger.close()

    asyncio.run(run())


def test_ledger_fills_a_budget_to_exactly_its_limit(ledger: BudgetLedger) -> None:
    """Ten $0.10 requests fill $1.00 and the eleventh is refused, to the pico-dollar: no epsilon. Past
    2^53 pico-dollars ($9,007) too, where Redis's Lua numbers are no longer exact."""

    async def run() -> None:
        small = LedgerEntry("small", usd("1.00"))
        await ledger.ensure("small", Money.ZERO)
        for i in range(10):
            assert await ledger.reserve([small], usd("0.10"), f"r{i}", 60) == -1
        assert await ledger.reserve([small], Money(1), "over", 60) == 0
        for i in range(10):
            await ledger.settle([small], f"r{i}", usd("0.10"))
        assert await ledger.usage("small") == (usd("1"), Money.ZERO)
        large = LedgerEntry("large", usd("10000.000000000001"))  # 10^16 + 1 pico-dollars
        await ledger.ensure("large", usd("9999.999999999999"))
        assert await ledger.reserve([large], Money(3), "big-over", 60) == 0
        assert await ledger.reserve([large], Money(2), "big", 60) == -1
        assert await ledger.reserve([large], Money(1), "big-more", 60) == 0
        assert await ledger.settle([large], "big", Money(2)) == [
            (usd("9999.999999999999"), usd("10000.000000000001"))
        ]
        await ledger.close()

    asyncio.run(run())


def test_a_refusal_says_why_a_call_of_no_cost_is_refused() -> None:
    """A budget already past its limit refuses even a call whose worst case is $0; the message says
    so, not "could cost up to $0.00"."""
    from pilothouse.gateway.budgets import BudgetExceeded

    budget = Budget("b1", "p1", BudgetScope.PROJECT, "", BudgetPeriod.MONTH, Money.from_usd("1"))
    free = str(BudgetExceeded(budget, Money.from_usd("1.20"), Money.ZERO, Money.ZERO))
    assert free.endswith("past its limit: it takes no more requests this period.") and "$0.00." not in free
    paid = str(BudgetExceeded(budget, Money.from_usd("0.90"), Money.ZERO, Money.from_usd("0.2")))
    assert paid.endswith(f"this request could cost up to {Money.from_usd('0.2').display()}.")
