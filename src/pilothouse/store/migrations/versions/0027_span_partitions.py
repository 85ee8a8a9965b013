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

revision = "0027"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from pilothouse.store.partitions import DAY_NS, DAYS_AHEAD, DEFAULT, SCHEMA, create_day, day_start

    run = bind.exec_driver_sql
    run("ALTER TABLE spans RENAME TO spans_unpartitioned")
    run("ALTER TABLE spans_unpartitioned RENAME CONSTRAINT uq_spans_trace_span TO uq_spans_unpartitioned")
    run(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    run("CREATE TABLE spans (LIKE spans_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (start_ns)")
    run("ALTER TABLE spans ALTER COLUMN pk TYPE bigint")
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
    run("INSERT INTO spans SELECT * FROM spans_unpartitioned")
    run("DROP TABLE spans_unpartitioned")


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
