"""Exact breakdowns of model calls by end user, virtual key, prompt version or tag, read from the
dimension rollups (``rollup_dim_day`` for the whole days of a range, ``rollup_dim_hour`` for the whole
hours left, ``rollup_dim_minute`` for the rest): the figures ``/api/costs`` would give, in a page's time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, LargeBinary, Table, and_, func, literal, or_, select, union_all

from pilothouse.domain.money import Money
from pilothouse.domain.rollups import DIMENSIONS, MONEY_SUMS, RollupSums
from pilothouse.domain.sketch import BUCKETS
from pilothouse.store import tables as t
from pilothouse.store.sql import SqlStore, usd_sum

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "DimensionGroup",
    "add_histograms",
    "dimension_breakdowns",
    "dimension_groups",
    "without_parallel_workers",
]

_ORDERS = ("requests", "cost")
# The sums a breakdown adds (what the pages show of a group): each one more costs a sixth of the read
# on SQLite. The group's other sums (reasoning tokens, the latency sum, savings) stay 0.
_SHOWN = (
    "count",
    "errors",
    "refused",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "unpriced",
)


@dataclass(slots=True)
class DimensionGroup:
    """The model calls of one value of a dimension ("" for none) over a range, summed exactly (the
    sums a page shows: :data:`_SHOWN`)."""

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


def _settled_apart(parts: list[tuple[Table, int, int]], now_s: int) -> list[tuple[Table, int, int]]:
    """``parts`` with each one cut where the rows that still change begin: its table's bucket of now
    (a quarter of an hour for the minute rows). The part before the cut changes only with late spans,
    so its histograms stay kept (pilothouse.store.rollup_cache) while new calls come in."""
    out = []
    for table, lo, hi in parts:
        step = max(900, next(g for g, rollup in t.DIM_ROLLUPS if rollup is table))
        cut = now_s // step * step
        out.extend([(table, lo, cut), (table, cut, hi)] if lo < cut < hi else [(table, lo, hi)])
    return out


def without_parallel_workers(conn: Connection) -> None:
    """No parallel workers for the rest of this transaction on PostgreSQL (nothing elsewhere). A
    page's reads of the rollups touch thousands of rows; starting workers for them cost more than it
    saved (at 1,000,000 spans, the histograms of a 7-day breakdown: 36 ms with 2 workers, 15 ms without)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")


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
    return dimension_breakdowns(store, project_id, (dimension,), start_s, end_s, limit=limit, order=order)[
        dimension
    ]


def dimension_breakdowns(
    store: SqlStore,
    project_id: str,
    dimensions: Sequence[str],
    start_s: int,
    end_s: int,
    *,
    limit: int = 20,
    order: str = "requests",
) -> dict[str, tuple[list[DimensionGroup], int]]:
    """:func:`dimension_groups` of several dimensions at once: the rollups' rows of a range hold every
    dimension side by side, so one read of the range sums them all (a page's three breakdowns each
    read the others' rows too, and left them)."""
    for dimension in dimensions:
        if dimension not in DIMENSIONS:
            raise ValueError(f"dimension must be one of {', '.join(DIMENSIONS)}")
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {', '.join(_ORDERS)}")
    if start_s % 60 or end_s % 60:
        raise ValueError("a breakdown's range is whole minutes")
    parts = _settled_apart(_parts(start_s, end_s), int(time.time()))
    wanted = list(dict.fromkeys(dimensions))
    measures = _SHOWN
    # One statement each for the sums and the histograms: the database adds the parts' sums (amounts
    # in whole pico-dollars, exactly) rather than this process adding Decimals, in one round trip.
    summed = []
    for part, (table, lo, hi) in enumerate(parts):
        c = table.c
        sums = [usd_sum(c[n]) if n in MONEY_SUMS else func.sum(c[n]) for n in measures]
        summed.append(
            select(
                literal(part).label("part"),
                c.dimension.label("dimension"),
                c.value.label("value"),
                *(s.label(n) for s, n in zip(sums, measures, strict=True)),
            )
            .where(c.project_id == project_id, c.dimension.in_(wanted), c.bucket >= lo, c.bucket < hi)
            .group_by(c.dimension, c.value)
        )
    # each value's sums, and its sums per part (a part's histograms are kept with them: below)
    totals: dict[str, dict[str, list[int]]] = {d: {} for d in wanted}
    per_part: dict[tuple[str, str], dict[int, tuple[Any, ...]]] = {}
    pg = store.dialect == "postgresql"
    cost_at = measures.index("cost_usd")
    top: dict[str, list[tuple[str, list[int]]]] = {}
    cache = store.histogram_cache
    with store.engine.connect() as conn:
        without_parallel_workers(conn)
        if summed:
            stmt = union_all(*summed) if len(summed) > 1 else summed[0]
            for part, dimension, value, *row in conn.execute(stmt):
                # PostgreSQL's sum of a bigint is a numeric (a Decimal here), which pages cannot format
                ints = [int(v or 0) for v in row]
                per_part.setdefault((dimension, value), {})[part] = tuple(ints)
                seen = totals[dimension].get(value)
                if seen is None:
                    totals[dimension][value] = ints
                else:
                    for i, v in enumerate(ints):
                        seen[i] += v
        for dimension, rows in totals.items():
            if order == "cost":
                ranked = sorted(rows.items(), key=lambda kv: (-kv[1][cost_at], -kv[1][0], kv[0]))
            else:
                ranked = sorted(rows.items(), key=lambda kv: (-kv[1][0], -kv[1][cost_at], kv[0]))
            top[dimension] = ranked[:limit]
        # the top values' histograms, per part: those kept from an earlier read with the same sums,
        # the others read (in one statement) and kept (pilothouse.store.rollup_cache: exact)
        wanted_parts = [
            (part, d, value, fingerprint)
            for d, groups in top.items()
            for value, _ in groups
            for part, fingerprint in per_part[d, value].items()
        ]

        def key(part: int, d: str, value: str) -> Any:
            table, lo, hi = parts[part]
            return (project_id, table.name, lo, hi, d, value)

        kept: dict[tuple[int, str, str], npt.NDArray[np.int64]] = {}
        missing: dict[int, dict[str, list[str]]] = {}
        for part, d, value, fingerprint in wanted_parts:
            hit = cache.get(key(part, d, value), fingerprint)
            if hit is None:
                missing.setdefault(part, {}).setdefault(d, []).append(value)
            else:
                kept[part, d, value] = hit[0]
        hist_rows: Sequence[Any] = []
        if missing:
            selects = []
            for part, chosen in missing.items():
                table, lo, hi = parts[part]
                c = table.c
                hist = func.array_send(c.latency_hist, type_=LargeBinary) if pg else c.latency_hist
                selects.append(
                    select(
                        literal(part).label("part"),
                        c.dimension.label("dimension"),
                        c.value.label("value"),
                        hist.label("hist"),
                    ).where(
                        c.project_id == project_id,
                        c.bucket >= lo,
                        c.bucket < hi,
                        or_(*(and_(c.dimension == d, c.value.in_(values)) for d, values in chosen.items())),
                    )
                )
            hist_rows = conn.execute(union_all(*selects) if len(selects) > 1 else selects[0]).fetchall()
    read_at = {
        (part, d, value): i
        for i, (part, d, value) in enumerate(
            (part, d, value)
            for part, chosen in missing.items()
            for d, values in chosen.items()
            for value in values
        )
    }
    read = add_histograms(
        [read_at[part, d, value] for part, d, value, _ in hist_rows],
        [raw for *_, raw in hist_rows],
        len(read_at),
        pg,
    )
    for (part, d, value), i in read_at.items():
        fingerprint = per_part[d, value][part]
        cache.put(key(part, d, value), fingerprint, fingerprint[0], read[i], read[i][:0])
        kept[part, d, value] = read[i]
    hists: dict[tuple[str, str], npt.NDArray[np.int64]] = {}
    for (_, d, value), part_hist in kept.items():
        hists[d, value] = hists[d, value] + part_hist if (d, value) in hists else part_hist.copy()
    out = {}
    for dimension, groups in top.items():
        found = []
        for value, row in groups:
            group_sums = RollupSums()
            for name, v in zip(measures, row, strict=True):
                setattr(group_sums, name, v)
            group_sums.cost_usd = Money(group_sums.cost_usd)  # type: ignore[arg-type]  # pico-dollars here
            found.append(DimensionGroup(value, group_sums, hists[dimension, value]))
        out[dimension] = (found, len(totals[dimension]))
    return out


def add_histograms(
    groups: Sequence[int], raws: Sequence[Any], count: int, array_send: bool
) -> npt.NDArray[np.int64]:
    """The element-wise sums of histograms per group: ``raws[i]`` (packed little-endian int64s, or
    PostgreSQL's binary array form when ``array_send``) is added to row ``groups[i]`` of the result
    (``count`` x BUCKETS)."""
    import numpy as np  # here: the server starts without numpy

    out = np.zeros((count, BUCKETS), np.int64)
    if not raws:
        return out
    if array_send:
        # int32 dimensions, flags, element type; per dimension int32 size and lower bound; then per
        # element an int32 length and the big-endian int64 (no NULLs: the column's arrays have none)
        bodies = [bytes(raw[20:]) if int.from_bytes(raw[:4], "big") else b"" for raw in raws]
        element = np.dtype([("length", ">i4"), ("value", ">i8")])
        values = np.frombuffer(b"".join(bodies), dtype=element)["value"].astype(np.int64)
        lengths = np.fromiter((len(body) // 12 for body in bodies), np.int64, len(bodies))
    else:
        packed = [bytes(raw or b"") for raw in raws]
        values = np.frombuffer(b"".join(packed), dtype="<i8").astype(np.int64)
        lengths = np.fromiter((len(p) // 8 for p in packed), np.int64, len(packed))
    width = int(lengths[0])
    if width and (lengths == width).all():
        # the usual case, every histogram as long: rows sorted by group and each group's run added
        # at once (np.add.at per element took ~2x as long for 5,000 rows)
        groups_at = np.asarray(groups, np.int64)
        order = np.argsort(groups_at, kind="stable")
        sorted_groups = groups_at[order]
        firsts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
        matrix = values.reshape(len(lengths), width)[order]
        out[sorted_groups[firsts], :width] = np.add.reduceat(matrix, firsts, axis=0)
        return out
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    columns = np.arange(len(values)) - starts
    rows = np.repeat(np.asarray(groups, np.int64), lengths)
    np.add.at(out, (rows, columns), values)
    return out
