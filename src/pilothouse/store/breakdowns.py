"""Exact breakdowns of model calls by end user, virtual key, prompt version or tag, read from the
dimension rollups (``rollup_dim_day`` for the whole days of a range, ``rollup_dim_hour`` for the whole
hours left, ``rollup_dim_minute`` for the rest): the figures ``/api/costs`` would give, in a page's time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, func, select

from pilothouse.domain.money import Money
from pilothouse.domain.rollups import DIMENSIONS, ROLLUP_SUMS, RollupSums
from pilothouse.domain.sketch import BUCKETS
from pilothouse.store import tables as t
from pilothouse.store.sql import SqlStore, usd_sum

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["DimensionGroup", "dimension_groups"]

_ORDERS = ("requests", "cost")


@dataclass(slots=True)
class DimensionGroup:
    """The model calls of one value of a dimension ("" for none) over a range, summed exactly."""

    value: str
    sums: RollupSums  # its latency_counts are left empty: latency_hist has them
    latency_hist: npt.NDArray[np.int64] | None  # only for the groups returned (the top ones)


def _parts(start_s: int, end_s: int) -> list[tuple[Table, int, int]]:
    """The rollup table and [start, end) to read for each part of a minute-aligned range: whole days
    from the day rollups, whole hours left from the hour rollups, the rest from the minute rollups."""
    parts: list[tuple[Table, int, int]] = []
    pending = [(start_s, end_s)]
    for granularity, table in reversed(t.DIM_ROLLUPS):
        left: list[tuple[int, int]] = []
        for lo, hi in pending:
            first = -(-lo // granularity) * granularity
            last = hi // granularity * granularity
            if first < last:
                parts.append((table, first, last))
                left.extend(r for r in ((lo, first), (last, hi)) if r[0] < r[1])
            else:
                left.append((lo, hi))
        pending = left
    return parts


def _hist(raw: Any) -> npt.NDArray[np.int64]:
    import numpy as np  # here: the server starts without numpy

    out = np.zeros(BUCKETS, np.int64)
    values = np.frombuffer(raw, dtype="<i8") if isinstance(raw, bytes) else np.asarray(raw or (), np.int64)
    out[: len(values)] += values
    return out


def dimension_groups(
    store: SqlStore,
    project_id: str,
    dimension: str,
    start_s: int,
    end_s: int,
    *,
    limit: int = 20,
    order: str = "requests",
) -> tuple[list[DimensionGroup], int]:
    """The ``limit`` values of ``dimension`` with the most requests (or the highest cost) among model
    calls in [start, end) (whole minutes), exact, with their latency histograms; and how many values
    the range has in all. Minute rows are kept for two days (``DIM_MINUTES_KEPT_S``): an older range
    is exact when it starts and ends on whole hours."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {', '.join(DIMENSIONS)}")
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {', '.join(_ORDERS)}")
    if start_s % 60 or end_s % 60:
        raise ValueError("a breakdown's range is whole minutes")
    totals: dict[str, list[int | float]] = {}
    parts = _parts(start_s, end_s)
    with store.engine.connect() as conn:
        for table, lo, hi in parts:
            c = table.c
            sums = [usd_sum(c[n]) if n == "cost_usd" else func.sum(c[n]) for n in ROLLUP_SUMS]
            stmt = (
                select(c.value, *sums)
                .where(c.project_id == project_id, c.dimension == dimension, c.bucket >= lo, c.bucket < hi)
                .group_by(c.value)
            )
            for value, *row in conn.execute(stmt):
                known = totals.get(value)
                if known is None:
                    totals[value] = [v or 0 for v in row]
                else:
                    for i, v in enumerate(row):
                        known[i] += v or 0
        cost_at = ROLLUP_SUMS.index("cost_usd")
        if order == "cost":
            ranked = sorted(totals.items(), key=lambda kv: (-kv[1][cost_at], -kv[1][0], kv[0]))
        else:
            ranked = sorted(totals.items(), key=lambda kv: (-kv[1][0], -kv[1][cost_at], kv[0]))
        top = ranked[:limit]
        hists = {value: _hist(None) for value, _ in top}
        if top:
            for table, lo, hi in parts:
                c = table.c
                stmt = select(c.value, c.latency_hist).where(
                    c.project_id == project_id,
                    c.dimension == dimension,
                    c.bucket >= lo,
                    c.bucket < hi,
                    c.value.in_([value for value, _ in top]),
                )
                for value, raw in conn.execute(stmt):
                    hists[value] += _hist(raw)
    groups = []
    for value, row in top:
        group_sums = RollupSums()
        for name, v in zip(ROLLUP_SUMS, row, strict=True):
            # PostgreSQL's sum of a bigint is a numeric (a Decimal here), which the pages cannot format
            setattr(group_sums, name, float(v) if name == "latency_ms_sum" else int(v))
        group_sums.cost_usd = Money(int(row[cost_at]))
        groups.append(DimensionGroup(value, group_sums, hists[value]))
    return groups, len(totals)
