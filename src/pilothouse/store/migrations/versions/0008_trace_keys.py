"""Traces get an integer key (``traces.pk``) and spans refer to their trace by it (``spans.trace_pk``)
instead of by (project, trace id).

OTLP trace ids are random: with spans unique on (project, trace id, span id), every batch wrote into
nearly every page of that index, and the cost of a batch grew with the store (SQLite's WAL: 1,362
bytes per span written on an empty store, 15,779 at 2,000,000 spans stored). New traces get ever
larger keys, so new spans now land at the end of a (trace_pk, span_id) index.

On SQLite ``pk`` is the rowid (INTEGER PRIMARY KEY), so both tables are rebuilt; on PostgreSQL the
columns are added in place.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TRACE_INDEXES = (
    ("ix_traces_time", ["project_id", "start_ns", "id"], None),
    ("ix_traces_session", ["project_id", "session_id", "start_ns", "id"], "session_id IS NOT NULL"),
    ("ix_traces_user", ["project_id", "user_id", "start_ns", "id"], "user_id IS NOT NULL"),
)
# The columns both tables keep, as they are at revision 0007.
_TRACE_COLUMNS = (
    "project_id", "id", "name", "root_span_id", "user_id", "session_id", "tags", "metadata",
    "environment", "release", "input", "output", "model", "start_ns", "end_ns", "observation_count",
    "error_count", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "unpriced_count",
)  # fmt: skip
_SPAN_COLUMNS = (
    "parent_id", "kind", "name", "start_ns", "end_ns", "status", "status_message", "input", "output",
    "attributes", "provider", "request_model", "model", "model_parameters", "input_tokens",
    "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd",
    "cost_details", "price_version", "ttft_ns", "prompt_name", "prompt_version", "key_id", "saved_usd",
)  # fmt: skip


def _trace_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("root_span_id", sa.String(16)),
        *(sa.Column(col, sa.Text()) for col in _TRACE_COLUMNS[4:13]),  # user_id ... model
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=False),
        sa.Column("observation_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("unpriced_count", sa.Integer(), nullable=False),
    ]


def _span_columns() -> list[sa.Column[Any]]:
    tokens = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
    return [
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.String(16)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        *(sa.Column(col, sa.Text()) for col in ("status_message", "input", "output", "attributes")),
        *(sa.Column(col, sa.Text()) for col in ("provider", "request_model", "model", "model_parameters")),
        *(sa.Column(col, sa.Integer()) for col in tokens),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("cost_details", sa.Text()),
        sa.Column("price_version", sa.Text()),
        sa.Column("ttft_ns", sa.BigInteger()),
        sa.Column("prompt_name", sa.Text()),
        sa.Column("prompt_version", sa.Text()),
        sa.Column("key_id", sa.String(32)),
        sa.Column("saved_usd", sa.Float()),
    ]


def _replace_tables(traces: str, spans: str) -> None:
    """SQLite: the rebuilt tables take the old ones' place (and the traces their indexes)."""
    op.drop_table("spans")
    op.drop_table("traces")
    op.rename_table(traces, "traces")
    op.rename_table(spans, "spans")
    for name, columns, where in _TRACE_INDEXES:
        cond = sa.text(where) if where else None
        op.create_index(name, "traces", columns, sqlite_where=cond)


def _cols(names: tuple[str, ...], prefix: str = "") -> str:
    return ", ".join(prefix + n for n in names)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE traces ADD COLUMN pk BIGSERIAL")
        op.execute(
            "ALTER TABLE traces DROP CONSTRAINT traces_pkey, ADD CONSTRAINT traces_pkey PRIMARY KEY (pk), "
            "ADD CONSTRAINT uq_traces_id UNIQUE (project_id, id)"
        )
        op.execute("ALTER TABLE spans ADD COLUMN trace_pk BIGINT")
        op.execute(
            "UPDATE spans s SET trace_pk = tr.pk FROM traces tr "
            "WHERE tr.project_id = s.project_id AND tr.id = s.trace_id"
        )
        op.execute("DELETE FROM spans WHERE trace_pk IS NULL")  # no trace row: never written so
        op.execute(
            "ALTER TABLE spans ALTER COLUMN trace_pk SET NOT NULL, DROP CONSTRAINT uq_spans_trace_span, "
            "DROP COLUMN trace_id, ADD CONSTRAINT uq_spans_trace_span UNIQUE (trace_pk, span_id)"
        )
        return
    # SQLite: new tables, rows copied over (oldest trace first, so keys follow time), old ones dropped.
    op.create_table(
        "traces_new",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        *_trace_columns(),
        sa.UniqueConstraint("project_id", "id", name="uq_traces_id"),
    )
    op.execute(
        f"INSERT INTO traces_new ({_cols(_TRACE_COLUMNS)}) "
        f"SELECT {_cols(_TRACE_COLUMNS)} FROM traces ORDER BY start_ns"
    )
    op.create_table(
        "spans_new",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("trace_pk", sa.Integer(), nullable=False),
        *_span_columns(),
        sa.UniqueConstraint("trace_pk", "span_id", name="uq_spans_trace_span"),
    )
    op.execute(
        f"INSERT INTO spans_new (pk, project_id, trace_pk, span_id, {_cols(_SPAN_COLUMNS)}) "
        f"SELECT s.pk, s.project_id, tr.pk, s.span_id, {_cols(_SPAN_COLUMNS, 's.')} FROM spans s "
        "JOIN traces_new tr ON tr.project_id = s.project_id AND tr.id = s.trace_id ORDER BY s.pk"
    )
    _replace_tables("traces_new", "spans_new")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE spans ADD COLUMN trace_id VARCHAR(32)")
        op.execute("UPDATE spans s SET trace_id = tr.id FROM traces tr WHERE tr.pk = s.trace_pk")
        op.execute(
            "ALTER TABLE spans ALTER COLUMN trace_id SET NOT NULL, DROP CONSTRAINT uq_spans_trace_span, "
            "DROP COLUMN trace_pk, ADD CONSTRAINT uq_spans_trace_span UNIQUE (project_id, trace_id, span_id)"
        )
        op.execute(
            "ALTER TABLE traces DROP CONSTRAINT uq_traces_id, DROP CONSTRAINT traces_pkey, "
            "DROP COLUMN pk, ADD CONSTRAINT traces_pkey PRIMARY KEY (project_id, id)"
        )
        return
    op.create_table(
        "spans_old",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        *_span_columns(),
        sa.UniqueConstraint("project_id", "trace_id", "span_id", name="uq_spans_trace_span"),
    )
    op.execute(
        f"INSERT INTO spans_old (pk, project_id, trace_id, span_id, {_cols(_SPAN_COLUMNS)}) "
        f"SELECT s.pk, s.project_id, tr.id, s.span_id, {_cols(_SPAN_COLUMNS, 's.')} "
        "FROM spans s JOIN traces tr ON tr.pk = s.trace_pk"
    )
    cols = [c for c in _trace_columns() if c.name not in ("project_id", "id")]
    op.create_table(
        "traces_old",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(32), primary_key=True),
        *cols,
    )
    op.execute(f"INSERT INTO traces_old ({_cols(_TRACE_COLUMNS)}) SELECT {_cols(_TRACE_COLUMNS)} FROM traces")
    _replace_tables("traces_old", "spans_old")
