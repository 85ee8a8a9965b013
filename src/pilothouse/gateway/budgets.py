"""Budget enforcement by reservation: before a request goes upstream, its worst-case cost is reserved
against every hard budget it counts against (all or none); when it ends the actual cost is settled and
the reservation released. Overspend is bounded by what is in flight, never by stale counters.

In-process by default; with Redis, reservations and spend live in Redis and one Lua script checks and
reserves atomically across gateway processes. Reservations of a process that died expire.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from pilothouse.domain.budgets import Budget, applicable_budgets, crossed_thresholds, period_start
from pilothouse.gateway.redis_client import connect_redis
from pilothouse.store.costs import CostStore

if TYPE_CHECKING:  # httpx is imported with the first webhook: it pulls rich and pygments in at import
    import httpx

log = logging.getLogger("pilothouse.budgets")
_EPSILON_USD = 1e-9  # sums of float prices: 20 x $0.05 must fit in $1.00


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One budget in its current period: the ledger key and the hard limit (None: soft)."""

    key: str
    limit_usd: float | None


class BudgetLedger(Protocol):
    """Spend and open reservations per budget period."""

    async def ensure(self, key: str, spent_usd: float) -> None:
        """Start counting ``key`` at ``spent_usd`` unless it is already counted."""
        ...

    async def reserve(self, entries: Sequence[LedgerEntry], amount: float, rid: str, ttl_s: float) -> int:
        """Reserve ``amount`` in every entry, or in none: the index of the first entry it would push
        over its limit, or -1 when reserved."""
        ...

    async def settle(
        self, entries: Sequence[LedgerEntry], rid: str, actual: float
    ) -> list[tuple[float, float]]:
        """Release the reservation and add the actual cost; spend (before, after) per entry."""
        ...

    async def usage(self, key: str) -> tuple[float, float]:
        """(spent, reserved) of one entry."""
        ...

    async def first_alert(self, key: str, threshold: float) -> bool:
        """True the first time a threshold alert is claimed for ``key`` (by any process)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass
class _LocalEntry:
    spent: float = 0.0
    reservations: dict[str, float] = field(default_factory=dict)
    alerted: set[float] = field(default_factory=set)


class LocalBudgetLedger:
    """A ledger within this process (one event loop: each call runs without interleaving)."""

    def __init__(self) -> None:
        self._entries: dict[str, _LocalEntry] = {}

    async def ensure(self, key: str, spent_usd: float) -> None:
        self._entries.setdefault(key, _LocalEntry(spent_usd))

    async def reserve(self, entries: Sequence[LedgerEntry], amount: float, rid: str, ttl_s: float) -> int:
        states = [self._entries.setdefault(e.key, _LocalEntry()) for e in entries]
        for index, (entry, state) in enumerate(zip(entries, states, strict=True)):
            held = state.spent + sum(state.reservations.values())
            if entry.limit_usd is not None and held + amount > entry.limit_usd + _EPSILON_USD:
                return index
        for state in states:
            state.reservations[rid] = amount
        return -1

    async def settle(
        self, entries: Sequence[LedgerEntry], rid: str, actual: float
    ) -> list[tuple[float, float]]:
        out = []
        for entry in entries:
            state = self._entries.setdefault(entry.key, _LocalEntry())
            state.reservations.pop(rid, None)
            before = state.spent
            state.spent += actual
            out.append((before, state.spent))
        return out

    async def usage(self, key: str) -> tuple[float, float]:
        state = self._entries.get(key) or _LocalEntry()
        return state.spent, sum(state.reservations.values())

    async def first_alert(self, key: str, threshold: float) -> bool:
        state = self._entries.setdefault(key, _LocalEntry())
        if threshold in state.alerted:
            return False
        state.alerted.add(threshold)
        return True

    async def close(self) -> None:
        return None


# KEYS: per entry 3 keys (spend hash, reservation amounts hash, reservation expiries zset).
# ARGV: amount, reservation id, now, expiry, then one limit per entry (-1: soft).
_RESERVE = """
local amount, rid, now, expiry = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local n = #KEYS / 3
for i = 1, n do
  local spend, res, exp = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local expired = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  for _, id in ipairs(expired) do
    redis.call('HDEL', res, id)
    redis.call('ZREM', exp, id)
  end
  local limit = tonumber(ARGV[4 + i])
  if limit >= 0 then
    local held = tonumber(redis.call('HGET', spend, 'spent') or '0')
    for _, v in ipairs(redis.call('HVALS', res)) do held = held + tonumber(v) end
    if held + amount > limit + 1e-9 then return i - 1 end
  end
end
for i = 1, n do
  redis.call('HSET', KEYS[3*i-1], rid, ARGV[1])
  redis.call('ZADD', KEYS[3*i], expiry, rid)
end
return -1
"""

# KEYS as above; ARGV: reservation id, actual cost. Returns before/after spend per entry, as strings.
_SETTLE = """
local out = {}
for i = 1, #KEYS / 3 do
  redis.call('HDEL', KEYS[3*i-1], ARGV[1])
  redis.call('ZREM', KEYS[3*i], ARGV[1])
  local before = redis.call('HGET', KEYS[3*i-2], 'spent') or '0'
  local after = redis.call('HINCRBYFLOAT', KEYS[3*i-2], 'spent', ARGV[2])
  table.insert(out, before)
  table.insert(out, after)
end
return out
"""


class RedisBudgetLedger:
    """A ledger shared by every gateway process using the same Redis."""

    def __init__(self, url: str, prefix: str = "pilothouse:budget") -> None:
        self._redis: Any = connect_redis(url)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._prefix = prefix

    def _keys(self, entries: Sequence[LedgerEntry]) -> list[str]:
        keys = []
        for entry in entries:
            base = f"{self._prefix}:{{{entry.key}}}"
            keys += [base, f"{base}:res", f"{base}:exp"]
        return keys

    async def ensure(self, key: str, spent_usd: float) -> None:
        await self._redis.hsetnx(f"{self._prefix}:{{{key}}}", "spent", repr(spent_usd))

    async def reserve(self, entries: Sequence[LedgerEntry], amount: float, rid: str, ttl_s: float) -> int:
        now = time.time()
        limits = [-1.0 if e.limit_usd is None else e.limit_usd for e in entries]
        index = await self._reserve(
            keys=self._keys(entries), args=[repr(amount), rid, now, now + ttl_s, *limits]
        )
        return int(index)

    async def settle(
        self, entries: Sequence[LedgerEntry], rid: str, actual: float
    ) -> list[tuple[float, float]]:
        values = await self._settle(keys=self._keys(entries), args=[rid, repr(actual)])
        floats = [float(v) for v in values]
        return list(zip(floats[0::2], floats[1::2], strict=True))

    async def usage(self, key: str) -> tuple[float, float]:
        base = f"{self._prefix}:{{{key}}}"
        spent = await self._redis.hget(base, "spent")
        await self._redis.zremrangebyscore(f"{base}:exp", "-inf", time.time())
        amounts = await self._redis.hvals(f"{base}:res")
        return float(spent or 0.0), sum(float(a) for a in amounts)

    async def first_alert(self, key: str, threshold: float) -> bool:
        return bool(await self._redis.set(f"{self._prefix}:{{{key}}}:alert:{threshold:g}", "1", nx=True))

    async def close(self) -> None:
        await self._redis.aclose()


class BudgetExceeded(Exception):
    """A hard budget cannot take this request's worst-case cost."""

    def __init__(self, budget: Budget, spent: float, reserved: float, worst_case: float) -> None:
        self.budget = budget
        super().__init__(
            f"Budget exceeded: {budget.label} has ${spent:.4f} spent and ${reserved:.4f} reserved by "
            f"requests in flight; this request could cost up to ${worst_case:.4f}."
        )


@dataclass
class Reservation:
    """A request's hold on its budgets, settled once when it ends."""

    id: str
    budgets: list[Budget]
    entries: list[LedgerEntry]
    amount: float
    settled: bool = False


def _entry(budget: Budget, now: datetime) -> LedgerEntry:
    start = int(period_start(budget.period, now).timestamp())
    return LedgerEntry(f"{budget.id}:{start}", budget.limit_usd if budget.hard else None)


class BudgetGuard:
    """Which budgets a request counts against, reserving and settling their spend, and alerts."""

    def __init__(
        self,
        costs: CostStore,
        ledger: BudgetLedger,
        *,
        refresh_s: float = 10.0,
        reservation_ttl_s: float = 900.0,
    ) -> None:
        self.costs = costs
        self.ledger = ledger
        self.refresh_s = refresh_s
        self.reservation_ttl_s = reservation_ttl_s
        self._budgets: list[Budget] = []
        self._dirty = True  # load before the first request
        self._started: set[str] = set()  # ledger keys whose stored spend this process has loaded
        self._webhooks: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None

    def invalidate(self) -> None:
        """Reload the budgets before the next request (after one was created or deleted here)."""
        self._dirty = True

    async def reload(self) -> None:
        """Read the budgets and the stored spend of their current periods, so that requests never
        wait for the database (a period that begins between reloads is read on its first request)."""
        budgets = await asyncio.to_thread(self.costs.list_budgets)
        now = datetime.now(UTC)
        for budget in budgets:
            await self._start(budget, _entry(budget, now), now)
        self._budgets, self._dirty = budgets, False

    def start(self) -> None:
        """Reload every ``refresh_s`` in the background (budgets created by the CLI or another process)."""

        async def refresh() -> None:
            while True:
                await asyncio.sleep(self.refresh_s)
                try:
                    await self.reload()
                except Exception:
                    log.warning("reloading the budgets failed; keeping the ones loaded", exc_info=True)

        self._refresher = asyncio.get_running_loop().create_task(refresh())

    async def _current(self) -> list[Budget]:
        if self._dirty:
            await self.reload()
        return self._budgets

    async def applicable(
        self, project_id: str, key_id: str | None, user_id: str | None, tags: Sequence[str]
    ) -> list[Budget]:
        """The budgets a request counts against."""
        budgets = await self._current()
        if not budgets:
            return []
        return applicable_budgets(budgets, project_id, key_id, user_id, tags)

    async def _start(self, budget: Budget, entry: LedgerEntry, now: datetime) -> None:
        if entry.key in self._started:
            return
        since_ns = int(period_start(budget.period, now).timestamp() * 1e9)
        spent = await asyncio.to_thread(self.costs.spend_since, budget, since_ns)
        await self.ledger.ensure(entry.key, spent)
        self._started.add(entry.key)

    async def reserve(self, budgets: list[Budget], worst_case_usd: float) -> Reservation:
        """Hold ``worst_case_usd`` against every budget; :class:`BudgetExceeded` when a hard one is full."""
        now = datetime.now(UTC)
        entries = [_entry(b, now) for b in budgets]
        for budget, entry in zip(budgets, entries, strict=True):
            await self._start(budget, entry, now)
        rid = uuid.uuid4().hex
        index = await self.ledger.reserve(entries, worst_case_usd, rid, self.reservation_ttl_s)
        if index >= 0:
            spent, reserved = await self.ledger.usage(entries[index].key)
            raise BudgetExceeded(budgets[index], spent, reserved, worst_case_usd)
        return Reservation(rid, budgets, entries, worst_case_usd)

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Release the hold and count the actual cost (0 when the call failed or has no price)."""
        if reservation.settled:
            return
        reservation.settled = True
        moves = await self.ledger.settle(reservation.entries, reservation.id, actual_usd)
        for budget, entry, (before, after) in zip(
            reservation.budgets, reservation.entries, moves, strict=True
        ):
            for threshold in crossed_thresholds(budget, before, after):
                if await self.ledger.first_alert(entry.key, threshold):
                    self._alert(budget, threshold, after)

    def _alert(self, budget: Budget, threshold: float, spent: float) -> None:
        log.warning("budget alert: %s reached %.0f%% ($%.4f spent)", budget.label, threshold * 100, spent)
        if budget.webhook_url:
            payload = {
                "type": "budget.threshold",
                "budget_id": budget.id,
                "project_id": budget.project_id,
                "scope": budget.scope.value,
                "scope_value": budget.scope_value,
                "period": budget.period.value,
                "limit_usd": budget.limit_usd,
                "spent_usd": spent,
                "threshold": threshold,
                "hard": budget.hard,
            }
            task = asyncio.get_running_loop().create_task(self._post(budget.webhook_url, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        import httpx

        if self._webhooks is None:
            self._webhooks = httpx.AsyncClient(timeout=10.0)
        try:
            response = await self._webhooks.post(url, json=payload)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("budget alert webhook %s failed: %s", url, exc)

    async def usage(self, budget: Budget) -> tuple[float, float]:
        """(spent, reserved) of a budget in its current period."""
        now = datetime.now(UTC)
        entry = _entry(budget, now)
        await self._start(budget, entry, now)
        return await self.ledger.usage(entry.key)

    async def close(self) -> None:
        """Stop reloading, wait for alert webhooks in flight and release connections."""
        if self._refresher is not None:
            self._refresher.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._webhooks is not None:
            await self._webhooks.aclose()
        await self.ledger.close()


def make_budget_ledger(redis_url: str | None) -> BudgetLedger:
    """Redis-backed when a URL is given, in-process otherwise."""
    return RedisBudgetLedger(redis_url) if redis_url else LocalBudgetLedger()
