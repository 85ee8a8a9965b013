"""Budgets: who they limit, over which period, and when they alert. Pure, no I/O.

A budget limits the spend of a project, a virtual key, an end user or a tag over a day, a week
(from Monday), a calendar month (UTC) or in total. A hard budget rejects requests that could overspend
it; a soft one only alerts. Enforcement (reservations) lives in :mod:`pilothouse.gateway.budgets`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pilothouse.domain.money import Money


class BudgetScope(enum.StrEnum):
    """What a budget limits."""

    PROJECT = "project"
    KEY = "key"
    USER = "user"
    TAG = "tag"


class BudgetPeriod(enum.StrEnum):
    """The window a budget's spend is counted over (UTC)."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    TOTAL = "total"


DEFAULT_ALERTS = (0.5, 0.8, 1.0)


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit."""

    id: str
    project_id: str
    scope: BudgetScope
    scope_value: str  # the key id, user id or tag; "" for the project
    period: BudgetPeriod
    limit_usd: Money
    hard: bool = True
    alert_thresholds: tuple[float, ...] = DEFAULT_ALERTS
    webhook_url: str | None = None
    created_ns: int = 0

    @property
    def label(self) -> str:
        """Readable name, e.g. ``key k_12ab monthly $50.00``."""
        who = (
            self.scope.value
            if self.scope is BudgetScope.PROJECT
            else f"{self.scope.value} {self.scope_value}"
        )
        period = {"day": "daily", "week": "weekly", "month": "monthly", "total": "total"}[self.period.value]
        return f"{who} {period} {self.limit_usd.display()}"


def period_start(period: BudgetPeriod, now: datetime) -> datetime:
    """Start of the period that contains ``now`` (UTC)."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is BudgetPeriod.DAY:
        return day
    if period is BudgetPeriod.WEEK:
        return day - timedelta(days=day.weekday())
    if period is BudgetPeriod.MONTH:
        return day.replace(day=1)
    return datetime(1970, 1, 1, tzinfo=UTC)


def period_end(period: BudgetPeriod, now: datetime) -> datetime | None:
    """End of the period that contains ``now`` (None for a total budget)."""
    start = period_start(period, now)
    if period is BudgetPeriod.DAY:
        return start + timedelta(days=1)
    if period is BudgetPeriod.WEEK:
        return start + timedelta(days=7)
    if period is BudgetPeriod.MONTH:
        return (start + timedelta(days=32)).replace(day=1)
    return None


def applicable_budgets(
    budgets: Iterable[Budget], project_id: str, key_id: str | None, user_id: str | None, tags: Sequence[str]
) -> list[Budget]:
    """The budgets a request of this project, key, end user and tags counts against."""
    out = []
    for b in budgets:
        if b.project_id != project_id:
            continue
        if (
            b.scope is BudgetScope.PROJECT
            or (b.scope is BudgetScope.KEY and b.scope_value == key_id)
            or (b.scope is BudgetScope.USER and b.scope_value == user_id)
            or (b.scope is BudgetScope.TAG and b.scope_value in tags)
        ):
            out.append(b)
    return out


def crossed_thresholds(budget: Budget, before: Money, after: Money) -> list[float]:
    """Alert thresholds (fractions of the limit) that spend crossed going from ``before`` to ``after``
    (spend at exactly a threshold has crossed it: ten calls of $0.10 reach 100% of $1.00)."""
    limit = budget.limit_usd
    if limit <= Money.ZERO:
        return [t for t in budget.alert_thresholds if before <= Money.ZERO < after]
    return [t for t in budget.alert_thresholds if before < limit * t <= after]


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``"50,80,100"`` (percent) or ``"0.5,0.8,1"`` (fractions) -> sorted fractions."""
    values = []
    for part in text.split(","):
        part = part.strip().rstrip("%")
        if not part:
            continue
        value = float(part)
        values.append(value / 100 if value > 1.0 else value)
    if any(v <= 0 for v in values):
        raise ValueError("alert thresholds must be positive")
    return tuple(sorted(set(values)))


def forecast_period_spend(spent: Money, period: BudgetPeriod, now: datetime) -> Money | None:
    """Run-rate forecast of the spend at the period's end (None for a total budget)."""
    end = period_end(period, now)
    if end is None:
        return None
    start = period_start(period, now)
    elapsed = (now - start).total_seconds()
    if elapsed <= 0:
        return spent
    return spent * ((end - start).total_seconds() / elapsed)


def budget_target_problem(
    scope: BudgetScope, value: str, keys: Iterable[tuple[str, bool]] = ()
) -> str | None:
    """Why a budget on ``scope`` ``value`` would not limit what its creator means, or None: a user or
    tag budget needs its value; a project budget takes none (its project is the one it is created in,
    and a value naming another project was silently dropped); a key budget names the id of an active
    key of the project, ``keys`` being its keys as (id, active) pairs (a name, a prefix or a revoked
    key's id would give a budget that never applies). One rule for the CLI, the API and the web UI."""
    if scope is BudgetScope.PROJECT:
        if value:
            return (
                f"a project budget takes no value ({value!r}): it limits the project it is created in; "
                "name that project instead (--project, or the key's project)"
            )
        return None
    if not value:
        return f"a {scope.value} budget needs the {scope.value} it limits"
    if scope is BudgetScope.KEY:
        active = dict(keys)
        if value not in active:
            return (
                f"there is no key with id {value!r} in this project (the ID column of 'pilothouse keys list')"
            )
        if not active[value]:
            return f"the key {value!r} is revoked: a budget on it would never apply"
    return None
