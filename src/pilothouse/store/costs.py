"""Cost queries of the store: budgets, spend in a scope, model calls to re-price or report on.

Time ranges go through the traces' time index (a call belongs to the period its trace started in), so
no extra index slows ingest down.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, select

from pilothouse.domain.budgets import Budget, BudgetPeriod, BudgetScope
from pilothouse.domain.money import Money
from pilothouse.domain.rollups import MAX_DIM_VALUE_CHARS, MAX_TAGS_ROLLED_UP
from pilothouse.domain.traces import Cost, ObservationKind, Usage
from pilothouse.store import tables as t
from pilothouse.store.rows import cost_details, cost_from_columns, loads, unpack
from pilothouse.store.sql import SqlStore, usd_sum

_MODEL_CALL_KINDS = (ObservationKind.GENERATION.value, ObservationKind.EMBEDDING.value)


@dataclass(frozen=True, slots=True)
class StoredCall:
    """A stored model call with what pricing and reports need."""

    pk: int
    project_id: str
    trace_id: str
    span_id: str
    name: str
    start_ns: int
    provider: str | None
    request_model: str | None
    model: str | None
    deployment_model: str | None  # the upstream model id of the gateway deployment that served it
    usage: Usage
    cost: Cost | None
    key_id: str | None
    user_id: str | None
    tags: tuple[str, ...]
    prompt: str | None  # "name" or "name@version"


class CostStore:
    """Budget and cost queries over a :class:`SqlStore`'s database."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine

    # -- budgets ------------------------------------------------------------------------------------

    def create_budget(
        self,
        project_id: str,
        scope: BudgetScope,
        scope_value: str,
        period: BudgetPeriod,
        limit_usd: Money,
        *,
        hard: bool = True,
        alert_thresholds: Sequence[float] = (0.5, 0.8, 1.0),
        webhook_url: str | None = None,
    ) -> Budget:
        """Store a new budget (its project is created if missing)."""
        self.store.ensure_project(project_id)
        budget = Budget(
            id=uuid.uuid4().hex,
            project_id=project_id,
            scope=scope,
            scope_value="" if scope is BudgetScope.PROJECT else scope_value,
            period=period,
            limit_usd=limit_usd,
            hard=hard,
            alert_thresholds=tuple(alert_thresholds),
            webhook_url=webhook_url,
            created_ns=time.time_ns(),
        )
        with self.engine.begin() as conn:
            conn.execute(
                t.budgets.insert().values(
                    id=budget.id,
                    project_id=project_id,
                    scope=scope.value,
                    scope_value=budget.scope_value,
                    period=period.value,
                    limit_usd=limit_usd.usd,
                    hard=hard,
                    alert_thresholds=",".join(f"{x:g}" for x in budget.alert_thresholds),
                    webhook_url=webhook_url,
                    created_ns=budget.created_ns,
                )
            )
        return budget

    def list_budgets(self, project_id: str | None = None) -> list[Budget]:
        """Budgets of one project or all, oldest first."""
        query = select(t.budgets).order_by(t.budgets.c.created_ns)
        if project_id is not None:
            query = query.where(t.budgets.c.project_id == project_id)
        with self.engine.connect() as conn:
            return [_budget(r._mapping) for r in conn.execute(query)]

    def delete_budget(self, budget_id: str, project_id: str | None = None) -> bool:
        """Delete a budget; False if there is no such budget (in that project, when given)."""
        cond = t.budgets.c.id == budget_id
        if project_id is not None:
            cond = and_(cond, t.budgets.c.project_id == project_id)
        with self.engine.begin() as conn:
            return conn.execute(t.budgets.delete().where(cond)).rowcount > 0

    def spend_since(self, budget: Budget, since_ns: int) -> Money:
        """What the budget's scope has spent on priced model calls the gateway metered since
        ``since_ns``: exactly the sum of their costs (each read as whole pico-dollars, which the
        database adds as integers). Spans sent to the collector are reported but never counted here:
        sending spans cannot block or unblock a budget."""
        s, tr = t.spans, t.traces
        conds = [
            tr.c.project_id == budget.project_id,
            tr.c.start_ns >= since_ns,
            s.c.start_ns >= since_ns,
            s.c.cost_usd.is_not(None),
            s.c.key_id.is_not(None),  # calls the gateway metered; spans clients sent never count
        ]
        if budget.scope is BudgetScope.KEY:
            conds.append(s.c.key_id == budget.scope_value)
        elif budget.scope is BudgetScope.USER:
            conds.append(tr.c.user_id == budget.scope_value)
        elif budget.scope is BudgetScope.TAG:
            conds.append(tr.c.tags.contains(orjson.dumps(budget.scope_value).decode()))
        query = select(usd_sum(s.c.cost_usd)).select_from(tr.join(s, s.c.trace_pk == tr.c.pk)).where(*conds)
        with self.engine.connect() as conn:
            return Money(int(conn.execute(query).scalar_one()))

    # -- model calls --------------------------------------------------------------------------------

    def iter_model_calls(
        self, since_ns: int, until_ns: int | None = None, project_id: str | None = None, batch: int = 2000
    ) -> Iterator[StoredCall]:
        """Stored model calls of traces started in [since, until), in batches (memory stays flat)."""
        s, tr = t.spans, t.traces
        conds = [tr.c.start_ns >= since_ns, s.c.kind.in_(_MODEL_CALL_KINDS), s.c.pk > bindparam("after")]
        if until_ns is not None:
            conds.append(tr.c.start_ns < until_ns)
        if project_id is not None:
            conds.append(tr.c.project_id == project_id)
        columns = (
                s.c.pk,
                s.c.project_id,
                tr.c.id.label("trace_id"),
                s.c.span_id,
                s.c.name,
                s.c.start_ns,
                s.c.provider,
                s.c.request_model,
                s.c.model,
                s.c.input_tokens,
                s.c.output_tokens,
                s.c.cache_read_tokens,
                s.c.cache_write_tokens,
                s.c.reasoning_tokens,
                s.c.cost_details,
                s.c.price_version,
                s.c.saved_usd,
                s.c.key_id,
                s.c.prompt_name,
                s.c.prompt_version,
                s.c.attributes,
                tr.c.user_id,
                tr.c.tags,
        )  # fmt: skip
        query = (
            select(*columns)
            .select_from(tr.join(s, s.c.trace_pk == tr.c.pk))
            .where(*conds)
            .order_by(s.c.pk)
            .limit(batch)
        )
        after = 0
        while True:
            with self.engine.connect() as conn:
                rows = [r._mapping for r in conn.execute(query, {"after": after})]
            for row in rows:
                yield _stored_call(row)
            if len(rows) < batch:
                return
            after = rows[-1]["pk"]

    def set_costs(self, changes: Sequence[tuple[StoredCall, Cost | None]]) -> None:
        """Replace the cost of stored calls, and move the trace totals and rollups by the difference,
        in one transaction."""
        if not changes:
            return
        s, tr = t.spans, t.traces
        with self.engine.begin() as conn:
            for call, cost in changes:
                conn.execute(
                    s.update()
                    .where(s.c.pk == call.pk)
                    .values(
                        cost_usd=cost.total.usd if cost else None,
                        cost_details=cost_details(cost) if cost else None,
                        price_version=cost.price_version if cost else None,
                        saved_usd=cost.saved.usd if cost else None,
                    )
                )
                before = call.cost.total if call.cost else Money.ZERO
                delta = ((cost.total if cost else Money.ZERO) - before).usd
                saved_before = call.cost.saved if call.cost else Money.ZERO
                saved = ((cost.saved if cost else Money.ZERO) - saved_before).usd
                unpriced = (cost is None) - (call.cost is None)
                conn.execute(
                    tr.update()
                    .where(tr.c.project_id == call.project_id, tr.c.id == call.trace_id)
                    .values(cost_usd=tr.c.cost_usd + delta, unpriced_count=tr.c.unpriced_count + unpriced)
                )
                seconds = call.start_ns // 1_000_000_000
                for granularity, rollup in t.ROLLUPS:
                    conn.execute(
                        rollup.update()
                        .where(
                            rollup.c.project_id == call.project_id,
                            rollup.c.bucket == seconds - seconds % granularity,
                            rollup.c.model == (call.model or call.request_model or ""),
                            rollup.c.name == call.name,
                        )
                        .values(
                            cost_usd=rollup.c.cost_usd + delta,
                            unpriced=rollup.c.unpriced + unpriced,
                            saved_usd=rollup.c.saved_usd + saved,
                        )
                    )
                for granularity, rollup in t.DIM_ROLLUPS:
                    for dimension, value in _dimension_values(call):
                        conn.execute(
                            rollup.update()
                            .where(
                                rollup.c.project_id == call.project_id,
                                rollup.c.bucket == seconds - seconds % granularity,
                                rollup.c.dimension == dimension,
                                rollup.c.value == value,
                            )
                            .values(
                                cost_usd=rollup.c.cost_usd + delta,
                                unpriced=rollup.c.unpriced + unpriced,
                                saved_usd=rollup.c.saved_usd + saved,
                            )
                        )


def _budget(row: Any) -> Budget:
    return Budget(
        id=row["id"],
        project_id=row["project_id"],
        scope=BudgetScope(row["scope"]),
        scope_value=row["scope_value"],
        period=BudgetPeriod(row["period"]),
        limit_usd=Money.from_usd(row["limit_usd"]),
        hard=bool(row["hard"]),
        alert_thresholds=tuple(float(x) for x in row["alert_thresholds"].split(",") if x),
        webhook_url=row["webhook_url"],
        created_ns=row["created_ns"],
    )


def _dimension_values(call: StoredCall) -> list[tuple[str, str]]:
    """The (dimension, value) rollup rows a stored call was counted in (as
    :func:`pilothouse.domain.rollups.batch_deltas` counts them)."""
    tags = list(dict.fromkeys(tag[:MAX_DIM_VALUE_CHARS] for tag in call.tags))[:MAX_TAGS_ROLLED_UP]
    return [
        ("user", (call.user_id or "")[:MAX_DIM_VALUE_CHARS]),
        ("key", call.key_id or ""),
        ("prompt", (call.prompt or "")[:MAX_DIM_VALUE_CHARS]),
        *(("tag", tag) for tag in tags or [""]),
    ]


def _stored_call(row: Any) -> StoredCall:
    attributes = loads(unpack(row["attributes"]), {}) if row["provider"] else {}
    deployment = attributes.get("gateway.deployment") if isinstance(attributes, dict) else None
    # gateway deployment ids read "provider/model@base_url"
    deployment_model = deployment.split("/", 1)[1].rsplit("@", 1)[0] if isinstance(deployment, str) else None
    prompt = row["prompt_name"]
    if prompt and row["prompt_version"]:
        prompt = f"{prompt}@{row['prompt_version']}"
    return StoredCall(
        pk=row["pk"],
        project_id=row["project_id"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        name=row["name"],
        start_ns=row["start_ns"],
        provider=row["provider"],
        request_model=row["request_model"],
        model=row["model"],
        deployment_model=deployment_model,
        usage=Usage(
            input=row["input_tokens"] or 0,
            output=row["output_tokens"] or 0,
            cache_read=row["cache_read_tokens"] or 0,
            cache_write=row["cache_write_tokens"] or 0,
            reasoning=row["reasoning_tokens"] or 0,
        ),
        cost=cost_from_columns(row["cost_details"], row["price_version"], row["saved_usd"]),
        key_id=row["key_id"] or None,  # "": metered with no key
        user_id=row["user_id"],
        tags=tuple(loads(row["tags"], [])),
        prompt=prompt,
    )
