"""Budget periods, scopes, alert thresholds and the in-process reservation ledger."""

from __future__ import annotations

import asyncio
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
from pilothouse.gateway.budgets import LedgerEntry, LocalBudgetLedger

NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)  # a Thursday


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
    return Budget("b-" + scope.value + value, project, scope, value, BudgetPeriod.DAY, 1.0)


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
    budget = Budget("b", "p", BudgetScope.PROJECT, "", BudgetPeriod.MONTH, 10.0)
    assert crossed_thresholds(budget, 4.0, 8.5) == [0.5, 0.8]
    assert crossed_thresholds(budget, 8.5, 9.0) == []
    assert crossed_thresholds(budget, 9.0, 10.0) == [1.0]
    assert parse_thresholds("50, 80,100") == (0.5, 0.8, 1.0)
    assert parse_thresholds("0.9") == (0.9,)
    with pytest.raises(ValueError):
        parse_thresholds("-5")
    # 25.6 days into a 30-day month with $12.80 spent: about $15 by the end of it
    assert forecast_period_spend(12.8, BudgetPeriod.MONTH, NOW) == pytest.approx(12.8 * 30 / (25 + 15.5 / 24))
    assert forecast_period_spend(1.0, BudgetPeriod.TOTAL, NOW) is None


def test_local_ledger_reserves_all_or_nothing_and_settles() -> None:
    async def run() -> None:
        ledger = LocalBudgetLedger()
        a, b = LedgerEntry("a", 1.0), LedgerEntry("b", 0.3)
        soft = LedgerEntry("s", None)
        await ledger.ensure("a", 0.5)
        await ledger.ensure("a", 99.0)  # already counted: ignored
        assert await ledger.reserve([a, soft], 0.4, "r1", 60) == -1
        assert await ledger.usage("a") == (0.5, 0.4)
        assert await ledger.reserve([a], 0.2, "r2", 60) == 0  # 0.5 + 0.4 + 0.2 > 1.0
        assert await ledger.reserve([soft, b], 0.31, "r3", 60) == 1  # b cannot take it: nothing held
        assert await ledger.usage("s") == (0.0, 0.4)
        moves = await ledger.settle([a, soft], "r1", 0.1)
        assert moves == [(0.5, pytest.approx(0.6)), (0.0, pytest.approx(0.1))]
        assert await ledger.usage("a") == (pytest.approx(0.6), 0.0)
        assert await ledger.first_alert("a", 0.5) and not await ledger.first_alert("a", 0.5)

    asyncio.run(run())
