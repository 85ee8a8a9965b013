"""PostgreSQL's spans are partitioned by time (migration 0027): ``spans`` is a declarative
``PARTITION BY RANGE (start_ns)`` table whose partitions live in the ``ph_partitions`` schema, one per
UTC day (``spans_pYYYYMMDD``), with a default partition (``spans_default``) for spans outside every
day that has one (a backfill of old spans, clocks far ahead) and, on a store migrated with data, one
partition of everything stored before (``spans_history``).

The retention job (which one process at a time runs, under its lease) creates the days ahead of time
(:data:`DAYS_AHEAD`) and drops a whole partition once every span in it is past its project's retention:
one ``DROP TABLE`` instead of deleting the rows in batches. The traces are not partitioned: a trace's
row is upserted by its id from every batch that carries one of its spans, and a unique index on a
partitioned table must hold the partition key, which a trace's start (the earliest span seen so far)
would change under it. SQLite has no partitions; none of this runs there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

DAY_NS = 86_400 * 10**9
DAYS_AHEAD = 7  # days the job keeps created ahead of today
SCHEMA = "ph_partitions"
DEFAULT = "spans_default"
_DAY_NAME = re.compile(r"^spans_p(\d{8})$")


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition of ``spans``: its name (in :data:`SCHEMA`) and range of ``start_ns``, [low, high)
    (None: unbounded; both None for the default partition)."""

    name: str
    low: int | None
    high: int | None

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT


def day_start(ns: int) -> int:
    """The start (ns) of the UTC day holding ``ns``."""
    return ns - ns % DAY_NS


def day_name(start_ns: int) -> str:
    """The partition name of the UTC day starting at ``start_ns``."""
    return "spans_p" + datetime.fromtimestamp(start_ns // 10**9, UTC).strftime("%Y%m%d")


def is_partitioned(conn: Connection) -> bool:
    """Whether ``spans`` is a partitioned table here (PostgreSQL at migration 0027 or later)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.exec_driver_sql(
        "SELECT relkind FROM pg_class WHERE oid = to_regclass('public.spans')"
    ).scalar()
    return kind == "p"


def _bound(text: str) -> int | None:
    value = text.strip().strip("'")
    return None if value.upper() in ("MINVALUE", "MAXVALUE") else int(value)


def partitions(conn: Connection) -> list[Partition]:
    """The partitions of ``spans``, the default one first, then by range."""
    found = []
    for name, bound in conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.spans'::regclass"
    ):
        match = re.match(r"FOR VALUES FROM \((.+)\) TO \((.+)\)", bound)
        if match is None:  # DEFAULT
            found.append(Partition(name, None, None))
        else:
            found.append(Partition(name, _bound(match.group(1)), _bound(match.group(2))))
    return sorted(found, key=lambda p: (not p.is_default, p.low if p.low is not None else -(2**63)))


def _overlaps(p: Partition, low: int, high: int) -> bool:
    if p.is_default:
        return False
    return (p.low is None or p.low < high) and (p.high is None or low < p.high)


def create_day(conn: Connection, start_ns: int) -> str | None:
    """Create the partition of the UTC day starting at ``start_ns`` unless a partition already covers
    any of it; spans of that day in the default partition move into it. Its name, or None. In the
    caller's transaction; the attach locks the default partition briefly (it checks that none of the
    day's spans is left there)."""
    low, high = start_ns, start_ns + DAY_NS
    if any(_overlaps(p, low, high) for p in partitions(conn)):
        return None
    name = day_name(low)
    conn.exec_driver_sql(f"CREATE TABLE {SCHEMA}.{name} (LIKE public.spans INCLUDING DEFAULTS)")
    conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {SCHEMA}.{DEFAULT} WHERE start_ns >= {low} AND start_ns < {high} "
        f"RETURNING *) INSERT INTO {SCHEMA}.{name} SELECT * FROM moved"
    )
    # a CHECK that implies the range spares the attach a scan of the new table
    conn.exec_driver_sql(
        f"ALTER TABLE {SCHEMA}.{name} ADD CONSTRAINT {name}_range "
        f"CHECK (start_ns IS NOT NULL AND start_ns >= {low} AND start_ns < {high})"
    )
    conn.exec_driver_sql(
        f"ALTER TABLE public.spans ATTACH PARTITION {SCHEMA}.{name} FOR VALUES FROM ({low}) TO ({high})"
    )
    conn.exec_driver_sql(f"ALTER TABLE {SCHEMA}.{name} DROP CONSTRAINT {name}_range")
    return name


def ensure_days(engine: Engine, from_ns: int, to_ns: int) -> list[str]:
    """Create the day partitions from the day of ``from_ns`` through the day of ``to_ns`` (each in its
    own transaction); the names created. Nothing on SQLite or an unpartitioned store."""
    created: list[str] = []
    if engine.dialect.name != "postgresql":
        return created
    day = day_start(from_ns)
    while day <= to_ns:
        with engine.begin() as conn:
            if not is_partitioned(conn):
                return created
            name = create_day(conn, day)
        if name is not None:
            created.append(name)
        day += DAY_NS
    return created


def ensure_ahead(engine: Engine, now_ns: int, days: int = DAYS_AHEAD) -> list[str]:
    """Create the partitions of today and the next ``days`` days that are missing."""
    return ensure_days(engine, now_ns, now_ns + days * DAY_NS)


def drop_expired(engine: Engine, cutoffs: dict[str, int]) -> list[str]:
    """Drop every bounded partition all of whose spans are past retention: its range ends at or before
    the cutoff of each project with a span in it (``cutoffs``: project -> the start before which its
    spans go; a project missing from it keeps its spans). The default partition is never dropped (the
    batch deletes empty it). The names dropped."""
    dropped: list[str] = []
    if engine.dialect.name != "postgresql" or not cutoffs:
        return dropped
    with engine.connect() as conn:
        if not is_partitioned(conn):
            return dropped
        candidates = [p for p in partitions(conn) if not p.is_default and p.high is not None]
    latest = max(cutoffs.values())
    for p in candidates:
        assert p.high is not None
        if p.high > latest:
            continue
        expired = sorted(project for project, cutoff in cutoffs.items() if p.high <= cutoff)
        with engine.begin() as conn:
            # a span of a project that keeps it (or has no retention) keeps the partition: the scan
            # stops at the first one (and reads the whole partition only when it is about to go)
            kept = conn.exec_driver_sql(
                f"SELECT 1 FROM {SCHEMA}.{p.name} WHERE project_id <> ALL(%s) LIMIT 1", (expired,)
            ).first()
            if kept is None:
                conn.exec_driver_sql(f"ALTER TABLE public.spans DETACH PARTITION {SCHEMA}.{p.name}")
                conn.exec_driver_sql(f"DROP TABLE {SCHEMA}.{p.name}")
                dropped.append(p.name)
    return dropped
