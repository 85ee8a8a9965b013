"""PostgreSQL: ``spans`` becomes a table partitioned by time (``PARTITION BY RANGE (start_ns)``, a
partition per UTC day in the ``ph_partitions`` schema: see :mod:`pilothouse.store.partitions`). The
stored spans are copied into it: into one ``spans_history`` partition of everything before the day
after the latest stored span (none for an empty store), today and the days ahead get partitions of
their own, and a default partition takes spans outside them. A partition's unique index holds the
partition key, so the spans' unique key becomes (trace_pk, span_id, start_ns) (a retried export
repeats a span's start), and the span key ``pk`` becomes a bigint with no index of its own (nothing
looks a span up by it; 23 B/span). SQLite is unchanged.

Revision ID: 0027
Revises: 0025
"""

from __future__ import annotations

import time

from alembic import op
from sqlalchemy import Connection

revision = "0027"
down_revision = "0025"
branch_labels = None
depends_on = None


def _columns_by_width(bind: Connection, table: str) -> list[str]:
    """The column definitions of ``table`` (name, type, NOT NULL, default), the 8-byte ones first, then
    the 4-byte ones, then the variable-length ones (each group in the table's order): the fixed-width
    columns then need no alignment padding between variable-length ones (~10 bytes a span row). The
    span key ``pk`` becomes a bigint."""
    rows = bind.exec_driver_sql(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attlen, "
        "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        f"WHERE a.attrelid = '{table}'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    ).all()
    columns = []
    for name, kind, not_null, length, default in rows:
        if name == "pk":
            kind, length = "bigint", 8
        width = 0 if length == 8 else 1 if length == 4 else 2
        definition = f"{name} {kind}{' NOT NULL' if not_null else ''}"
        columns.append((width, definition + (f" DEFAULT {default}" if default else "")))
    return [definition for _, definition in sorted(columns, key=lambda c: c[0])]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from pilothouse.store.partitions import DAY_NS, DAYS_AHEAD, DEFAULT, SCHEMA, create_day, day_start

    run = bind.exec_driver_sql
    run("ALTER TABLE spans RENAME TO spans_unpartitioned")
    run("ALTER TABLE spans_unpartitioned RENAME CONSTRAINT uq_spans_trace_span TO uq_spans_unpartitioned")
    run(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    columns = _columns_by_width(bind, "spans_unpartitioned")
    run(f"CREATE TABLE spans ({', '.join(columns)}) PARTITION BY RANGE (start_ns)")
    sequence = run("SELECT pg_get_serial_sequence('spans_unpartitioned', 'pk')").scalar_one()
    run(f"ALTER SEQUENCE {sequence} AS bigint OWNED BY spans.pk")
    run("ALTER TABLE spans ADD CONSTRAINT uq_spans_trace_span UNIQUE (trace_pk, span_id, start_ns)")
    run(f"CREATE TABLE {SCHEMA}.{DEFAULT} PARTITION OF spans DEFAULT")
    latest = run("SELECT max(start_ns) FROM spans_unpartitioned").scalar()
    today = day_start(time.time_ns())
    first_day = today
    if latest is not None:
        first_day = max(today, day_start(int(latest)) + DAY_NS)
        run(
            f"CREATE TABLE {SCHEMA}.spans_history PARTITION OF spans "
            f"FOR VALUES FROM (MINVALUE) TO ({first_day})"
        )
    for day in range(first_day, today + (DAYS_AHEAD + 1) * DAY_NS, DAY_NS):
        create_day(bind, day)
    names = ", ".join(c.split(" ", 1)[0] for c in columns)
    run(f"INSERT INTO spans ({names}) SELECT {names} FROM spans_unpartitioned")
    run("DROP TABLE spans_unpartitioned")
    run("CREATE INDEX ix_spans_search ON spans USING gin (search)")  # full-text search (0022)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from pilothouse.store.partitions import SCHEMA

    run = bind.exec_driver_sql
    run("ALTER TABLE spans RENAME TO spans_partitioned")
    run("ALTER TABLE spans_partitioned RENAME CONSTRAINT uq_spans_trace_span TO uq_spans_partitioned")
    run("CREATE TABLE spans (LIKE spans_partitioned INCLUDING DEFAULTS)")
    sequence = run("SELECT pg_get_serial_sequence('spans_partitioned', 'pk')").scalar_one()
    run(f"ALTER SEQUENCE {sequence} OWNED BY spans.pk")
    # a span stored twice with two starts (possible only here) keeps its first row
    run(
        "INSERT INTO spans SELECT DISTINCT ON (trace_pk, span_id) * FROM spans_partitioned "
        "ORDER BY trace_pk, span_id, pk"
    )
    run("DROP TABLE spans_partitioned")
    run(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    run("ALTER TABLE spans ALTER COLUMN pk TYPE integer")
    run(f"ALTER SEQUENCE {sequence} AS integer")
    run("ALTER TABLE spans ADD PRIMARY KEY (pk)")
    run("ALTER TABLE spans ADD CONSTRAINT uq_spans_trace_span UNIQUE (trace_pk, span_id)")
    run("CREATE INDEX ix_spans_search ON spans USING gin (search)")
