"""Budget enforcement by reservation: before a request goes upstream, its worst-case cost is reserved
against every hard budget it counts against (all or none); when it ends the actual cost is settled and
the reservation released. Overspend is bounded by what is in flight, never by stale counters.

In-process by default; with Redis, reservations and spend live in Redis and one Lua script checks and
reserves atomically across gateway processes. Reservations of a process that died expire. Amounts are
:class:`~pilothouse.domain.money.Money` throughout, so a budget of $1.00 takes twenty $0.05 requests
and not one pico-dollar more; Redis holds them as whole pico-dollars (see :data:`_RESERVE`).
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

import orjson

from pilothouse.domain.budgets import Budget, applicable_budgets, crossed_thresholds, period_start
from pilothouse.domain.money import Money
from pilothouse.domain.webhooks import WebhookRefused, displayed_webhook_url
from pilothouse.gateway.redis_client import RedisUnavailable, connect_redis, redis_errors
from pilothouse.gateway.webhooks import post_webhook
from pilothouse.store.costs import CostStore

if TYPE_CHECKING:  # httpx is imported with the first webhook: it pulls rich and pygments in at import
    import httpx

log = logging.getLogger("pilothouse.budgets")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One budget in its current period: the ledger key and the hard limit (None: soft)."""

    key: str
    limit: Money | None


class BudgetLedger(Protocol):
    """Spend and open reservations per budget period."""

    async def ensure(self, key: str, spent: Money) -> None:
        """Count ``key`` from at least ``spent`` (the spend the database has recorded): start it there
        when it is not counted (a new period, or a Redis that restarted empty), raise it when it
        counts less (settlements lost while Redis was unreachable), never lower it."""
        ...

    async def reserve(self, entries: Sequence[LedgerEntry], amount: Money, rid: str, ttl_s: float) -> int:
        """Reserve ``amount`` in every entry, or in none: the index of the first entry it would push
        over its limit, -1 when reserved, or ``-2 - i`` when entry ``i`` is not counted (its spend is
        unknown: :meth:`ensure` it first)."""
        ...

    async def settle(
        self, entries: Sequence[LedgerEntry], rid: str, actual: Money
    ) -> list[tuple[Money, Money]]:
        """Release the reservation and add the actual cost; spend (before, after) per entry."""
        ...

    async def usage(self, key: str) -> tuple[Money, Money]:
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
    spent: Money = Money.ZERO
    reservations: dict[str, Money] = field(default_factory=dict)
    alerted: set[float] = field(default_factory=set)


class LocalBudgetLedger:
    """A ledger within this process (one event loop: each call runs without interleaving)."""

    def __init__(self) -> None:
        self._entries: dict[str, _LocalEntry] = {}

    async def ensure(self, key: str, spent: Money) -> None:
        entry = self._entries.setdefault(key, _LocalEntry(spent))
        if entry.spent < spent:
            entry.spent = spent

    async def reserve(self, entries: Sequence[LedgerEntry], amount: Money, rid: str, ttl_s: float) -> int:
        states = [self._entries.setdefault(e.key, _LocalEntry()) for e in entries]
        for index, (entry, state) in enumerate(zip(entries, states, strict=True)):
            held = state.spent + Money.sum(state.reservations.values())
            if entry.limit is not None and held + amount > entry.limit:
                return index
        for state in states:
            state.reservations[rid] = amount
        return -1

    async def settle(
        self, entries: Sequence[LedgerEntry], rid: str, actual: Money
    ) -> list[tuple[Money, Money]]:
        out = []
        for entry in entries:
            state = self._entries.setdefault(entry.key, _LocalEntry())
            state.reservations.pop(rid, None)
            before = state.spent
            state.spent += actual
            out.append((before, state.spent))
        return out

    async def usage(self, key: str) -> tuple[Money, Money]:
        state = self._entries.get(key) or _LocalEntry()
        return state.spent, Money.sum(state.reservations.values())

    async def first_alert(self, key: str, threshold: float) -> bool:
        state = self._entries.setdefault(key, _LocalEntry())
        if threshold in state.alerted:
            return False
        state.alerted.add(threshold)
        return True

    async def close(self) -> None:
        return None


# Amounts in Redis are whole pico-dollars as decimal text (Money.pico): the spend grows by HINCRBY
# (exact in int64, to $9.2M). Lua's numbers are doubles, exact only to 2^53 pico-dollars ($9,007), so
# the check adds amounts as (micro-dollars, pico-dollars under a micro-dollar): exact to $9 billion.
_AMOUNTS = """
local function split(text)
  local negative = string.sub(text, 1, 1) == '-'
  local digits = negative and string.sub(text, 2) or text
  local high, low = 0, tonumber(digits)
  if #digits > 6 then
    high, low = tonumber(string.sub(digits, 1, -7)), tonumber(string.sub(digits, -6))
  end
  if negative then return -high, -low end
  return high, low
end
local function normal(high, low)
  return high + math.floor(low / 1000000), low % 1000000
end
"""

# KEYS: the spend hash. ARGV: the spend the database has recorded. Raises the spend to it, never lower.
_ENSURE = (
    _AMOUNTS
    + """
local current = redis.call('HGET', KEYS[1], 'spent')
if current then
  local high, low = normal(split(current))
  local new_high, new_low = normal(split(ARGV[1]))
  if high > new_high or (high == new_high and low >= new_low) then return 0 end
end
redis.call('HSET', KEYS[1], 'spent', ARGV[1])
return 1
"""
)

# KEYS: per entry 3 keys (spend hash, reservation amounts hash, reservation expiries zset).
# ARGV: amount, reservation id, now, expiry, then one limit per entry ('-': soft).
# A spend hash that does not exist (a Redis that restarted empty, or evicted it) is not counted as 0:
# the script answers -2 - index and the guard seeds it from the database first.
_RESERVE = (
    _AMOUNTS
    + """
local rid, now, expiry = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local amount_high, amount_low = split(ARGV[1])
local n = #KEYS / 3
for i = 1, n do
  if redis.call('EXISTS', KEYS[3*i-2]) == 0 then return -2 - (i - 1) end
end
for i = 1, n do
  local spend, res, exp = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local expired = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  for _, id in ipairs(expired) do
    redis.call('HDEL', res, id)
    redis.call('ZREM', exp, id)
  end
  if ARGV[4 + i] ~= '-' then
    local high, low = split(redis.call('HGET', spend, 'spent') or '0')
    high, low = high + amount_high, low + amount_low
    for _, v in ipairs(redis.call('HVALS', res)) do
      local h, l = split(v)
      high, low = high + h, low + l
    end
    high, low = normal(high, low)
    local limit_high, limit_low = normal(split(ARGV[4 + i]))
    if high > limit_high or (high == limit_high and low > limit_low) then return i - 1 end
  end
end
for i = 1, n do
  redis.call('HSET', KEYS[3*i-1], rid, ARGV[1])
  redis.call('ZADD', KEYS[3*i], expiry, rid)
end
return -1
"""
)

# KEYS as above; ARGV: reservation id, actual cost. Returns before/after spend per entry, as text (the
# integer HINCRBY returns would reach Lua as a double). A spend that is no longer counted (Redis
# restarted empty) is left for the next reservation to seed from the database, which has this cost.
_SETTLE = """
local out = {}
for i = 1, #KEYS / 3 do
  redis.call('HDEL', KEYS[3*i-1], ARGV[1])
  redis.call('ZREM', KEYS[3*i], ARGV[1])
  local before = redis.call('HGET', KEYS[3*i-2], 'spent')
  if before then
    redis.call('HINCRBY', KEYS[3*i-2], 'spent', ARGV[2])
    table.insert(out, before)
    table.insert(out, redis.call('HGET', KEYS[3*i-2], 'spent'))
  else
    table.insert(out, '0')
    table.insert(out, '0')
  end
end
return out
"""


class RedisBudgetLedger:
    """A ledger shared by every gateway process using the same Redis."""

    # "pico": the ledgers of releases that kept float USD in Redis are left alone (a new ledger starts
    # from the stored spend).
    def __init__(self, url: str, prefix: str = "pilothouse:budget:pico") -> None:
        self._redis: Any = connect_redis(url)
        self._ensure = self._redis.register_script(_ENSURE)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._prefix = prefix

    def _keys(self, entries: Sequence[LedgerEntry]) -> list[str]:
        keys = []
        for entry in entries:
            base = f"{self._prefix}:{{{entry.key}}}"
            keys += [base, f"{base}:res", f"{base}:exp"]
        return keys

    async def ensure(self, key: str, spent: Money) -> None:
        try:
            await self._ensure(keys=[f"{self._prefix}:{{{key}}}"], args=[str(spent.pico)])
        except redis_errors() as exc:
            raise RedisUnavailable("budgets", exc) from exc

    async def reserve(self, entries: Sequence[LedgerEntry], amount: Money, rid: str, ttl_s: float) -> int:
        now = time.time()
        limits = ["-" if e.limit is None else str(e.limit.pico) for e in entries]
        try:
            index = await self._reserve(
                keys=self._keys(entries), args=[str(amount.pico), rid, now, now + ttl_s, *limits]
            )
        except redis_errors() as exc:
            raise RedisUnavailable("budgets", exc) from exc
        return int(index)

    async def settle(
        self, entries: Sequence[LedgerEntry], rid: str, actual: Money
    ) -> list[tuple[Money, Money]]:
        try:
            values = await self._settle(keys=self._keys(entries), args=[rid, str(actual.pico)])
        except redis_errors() as exc:
            raise RedisUnavailable("budgets", exc) from exc
        amounts = [Money(int(v)) for v in values]
        return list(zip(amounts[0::2], amounts[1::2], strict=True))

    async def usage(self, key: str) -> tuple[Money, Money]:
        base = f"{self._prefix}:{{{key}}}"
        try:
            spent = await self._redis.hget(base, "spent")
            await self._redis.zremrangebyscore(f"{base}:exp", "-inf", time.time())
            amounts = await self._redis.hvals(f"{base}:res")
        except redis_errors() as exc:
            raise RedisUnavailable("budgets", exc) from exc
        return Money(int(spent or 0)), Money(sum(int(a) for a in amounts))

    async def first_alert(self, key: str, threshold: float) -> bool:
        try:
            claimed = await self._redis.set(f"{self._prefix}:{{{key}}}:alert:{threshold:g}", "1", nx=True)
        except redis_errors() as exc:
            raise RedisUnavailable("budgets", exc) from exc
        return bool(claimed)

    async def close(self) -> None:
        await self._redis.aclose()


class BudgetExceeded(Exception):
    """A hard budget cannot take this request's worst-case cost."""

    def __init__(self, budget: Budget, spent: Money, reserved: Money, worst_case: Money) -> None:
        self.budget = budget
        held = (
            f"Budget exceeded: {budget.label} has {spent.display()} spent and {reserved.display()} "
            "reserved by requests in flight"
        )
        if worst_case == Money.ZERO:  # nothing to add: the budget is already past its limit
            super().__init__(f"{held}, past its limit: it takes no more requests this period.")
        else:
            super().__init__(f"{held}; this request could cost up to {worst_case.display()}.")


@dataclass
class Reservation:
    """A request's hold on its budgets, settled once when it ends."""

    id: str
    budgets: list[Budget]
    entries: list[LedgerEntry]
    amount: Money
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
        webhook_allow: Sequence[str] = (),
    ) -> None:
        self.costs = costs
        self.webhook_allow = tuple(webhook_allow)  # hosts and networks alerts may reach though not public
        self.ledger = ledger
        self.refresh_s = refresh_s
        self.reservation_ttl_s = reservation_ttl_s
        self._budgets: list[Budget] = []
        self._dirty = True  # load before the first request
        self._started: set[str] = set()  # ledger keys whose stored spend this process has loaded
        # a Redis fault may have lost settlements: the next full reload raises every ledger to the
        # database's spend (which has them once their traces are written)
        self._reseed = False
        self._webhooks: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None

    def invalidate(self) -> None:
        """Reload the budgets before the next request (after one was created or deleted here)."""
        self._dirty = True

    async def reload(self) -> None:
        """Read the budgets and the stored spend of their current periods, so that requests never
        wait for the database (a period that begins between reloads is read on its first request).
        While Redis is unavailable the budgets are still read; their spend is seeded when it is back
        (one warning, not an error: the server starts degraded)."""
        budgets = await asyncio.to_thread(self.costs.list_budgets)
        self._budgets, self._dirty = budgets, False
        now = datetime.now(UTC)
        force, self._reseed = self._reseed, False
        try:
            for budget in budgets:
                await self._start(budget, _entry(budget, now), now, force=force)
        except RedisUnavailable as exc:
            self._fault()
            log.warning("%s; budget spend will be seeded from the database when it is back", exc)

    def _fault(self) -> None:
        """After a Redis fault: seed every ledger again before its next use, and once more at the next
        reload (settlements lost in the fault reach the database with their traces)."""
        self._started.clear()
        self._reseed = True

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

    async def _start(self, budget: Budget, entry: LedgerEntry, now: datetime, *, force: bool = False) -> None:
        """Seed the ledger entry with the spend the database has recorded (once per process and
        period, unless ``force``)."""
        if entry.key in self._started and not force:
            return
        since_ns = int(period_start(budget.period, now).timestamp() * 1e9)
        spent = await asyncio.to_thread(self.costs.spend_since, budget, since_ns)
        await self.ledger.ensure(entry.key, spent)
        self._started.add(entry.key)

    async def reserve(self, budgets: list[Budget], worst_case: Money) -> Reservation:
        """Hold ``worst_case`` against every budget; :class:`BudgetExceeded` when a hard one is full."""
        now = datetime.now(UTC)
        entries = [_entry(b, now) for b in budgets]
        rid = uuid.uuid4().hex
        try:
            for budget, entry in zip(budgets, entries, strict=True):
                await self._start(budget, entry, now)
            index = await self.ledger.reserve(entries, worst_case, rid, self.reservation_ttl_s)
            for _ in budgets:  # an entry Redis no longer has (it restarted empty): seed it, try again
                if index > -2:
                    break
                await self._start(budgets[-2 - index], entries[-2 - index], now, force=True)
                index = await self.ledger.reserve(entries, worst_case, rid, self.reservation_ttl_s)
        except RedisUnavailable:
            self._fault()
            raise
        if index <= -2:
            raise RedisUnavailable("budgets", RuntimeError("the ledger lost its entries while seeding"))
        if index >= 0:
            spent, reserved = await self.ledger.usage(entries[index].key)
            raise BudgetExceeded(budgets[index], spent, reserved, worst_case)
        return Reservation(rid, budgets, entries, worst_case)

    async def settle(self, reservation: Reservation, actual: Money) -> None:
        """Release the hold and count the actual cost (0 when the call failed or has no price)."""
        if reservation.settled:
            return
        reservation.settled = True
        try:
            moves = await self.ledger.settle(reservation.entries, reservation.id, actual)
        except RedisUnavailable:
            self._fault()  # this cost is in the database: the entries are raised to it later
            raise
        for budget, entry, (before, after) in zip(
            reservation.budgets, reservation.entries, moves, strict=True
        ):
            for threshold in crossed_thresholds(budget, before, after):
                if await self.ledger.first_alert(entry.key, threshold):
                    self._alert(budget, threshold, after)

    def _alert(self, budget: Budget, threshold: float, spent: Money) -> None:
        log.warning(
            "budget alert: %s reached %.0f%% (%s spent)", budget.label, threshold * 100, spent.display()
        )
        if budget.webhook_url:
            payload = {
                "type": "budget.threshold",
                "budget_id": budget.id,
                "project_id": budget.project_id,
                "scope": budget.scope.value,
                "scope_value": budget.scope_value,
                "period": budget.period.value,
                # amounts as JSON numbers with Money's exact text, as the API writes them
                "limit_usd": orjson.Fragment(str(budget.limit_usd).encode()),
                "spent_usd": orjson.Fragment(str(spent).encode()),
                "threshold": threshold,
                "hard": budget.hard,
            }
            task = asyncio.get_running_loop().create_task(self._post(budget.webhook_url, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        import httpx

        if self._webhooks is None:  # redirects are not followed: they could lead anywhere
            self._webhooks = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        shown = displayed_webhook_url(url, full=False)
        try:
            response = await post_webhook(self._webhooks, url, orjson.dumps(payload), self.webhook_allow)
            response.raise_for_status()
        except WebhookRefused as exc:
            log.warning("budget alert webhook %s refused: %s", shown, exc)
        except httpx.HTTPStatusError as exc:
            log.warning("budget alert webhook %s answered %d", shown, exc.response.status_code)
        except httpx.HTTPError as exc:  # its message names the address: the class says enough
            log.warning("budget alert webhook %s failed: %s", shown, type(exc).__name__)

    async def usage(self, budget: Budget) -> tuple[Money, Money]:
        """(spent, reserved) of a budget in its current period."""
        now = datetime.now(UTC)
        entry = _entry(budget, now)
        await self._start(budget, entry, now, force=True)  # what the database has, if Redis lost it
        return await self.ledger.usage(entry.key)

    async def stored_spend(self, budget: Budget) -> Money:
        """What the database has recorded as spent in the budget's current period (what a page shows
        while the ledger's Redis is unavailable)."""
        since_ns = int(period_start(budget.period, datetime.now(UTC)).timestamp() * 1e9)
        return await asyncio.to_thread(self.costs.spend_since, budget, since_ns)

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
