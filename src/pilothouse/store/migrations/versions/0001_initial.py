"""Initial schema: projects, keys, traces, spans, scores, rollups.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIG = sa.BigInteger()


def _rollup(name: str) -> None:
    op.create_table(
        name,
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("bucket", _BIG, primary_key=True),
        sa.Column("model", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), primary_key=True),
        *(
            sa.Column(col, _BIG, nullable=False)
            for col in (
                "count",
                "errors",
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "reasoning_tokens",
            )
        ),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("unpriced", _BIG, nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.Column(
            "latency_hist",
            sa.LargeBinary().with_variant(postgresql.ARRAY(sa.BigInteger()), "postgresql"),
            nullable=False,
        ),
    )


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_ns", _BIG, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_ns", _BIG, nullable=False),
        sa.Column("revoked_ns", _BIG),
    )
    op.create_table(
        "traces",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.Text()),
        sa.Column("root_span_id", sa.String(16)),
        *(
            sa.Column(col, sa.Text())
            for col in (
                "user_id",
                "session_id",
                "tags",
                "metadata",
                "environment",
                "release",
                "input",
                "output",
                "model",
            )
        ),
        sa.Column("start_ns", _BIG, nullable=False),
        sa.Column("end_ns", _BIG, nullable=False),
        sa.Column("observation_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("input_tokens", _BIG, nullable=False),
        sa.Column("output_tokens", _BIG, nullable=False),
        sa.Column("total_tokens", _BIG, nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("unpriced_count", sa.Integer(), nullable=False),
    )
    op.create_index("ix_traces_time", "traces", ["project_id", "start_ns", "id"])
    op.create_index("ix_traces_session", "traces", ["project_id", "session_id", "start_ns"])
    op.create_index("ix_traces_user", "traces", ["project_id", "user_id", "start_ns"])
    op.create_table(
        "spans",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.String(16)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("start_ns", _BIG, nullable=False),
        sa.Column("end_ns", _BIG, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        *(
            sa.Column(col, sa.Text())
            for col in (
                "status_message",
                "input",
                "output",
                "attributes",
                "provider",
                "request_model",
                "model",
                "model_parameters",
            )
        ),
        *(
            sa.Column(col, sa.Integer())
            for col in (
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "reasoning_tokens",
            )
        ),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("cost_details", sa.Text()),
        sa.Column("price_version", sa.Text()),
        sa.Column("ttft_ns", _BIG),
        sa.Column("prompt_name", sa.Text()),
        sa.Column("prompt_version", sa.Text()),
        sa.UniqueConstraint("project_id", "trace_id", "span_id", name="uq_spans_trace_span"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Meant to let PostgreSQL compress span texts from ~128 bytes on; it does not: the toaster only
        # runs on rows over ~2 KB (TOAST_TUPLE_THRESHOLD), then compresses and moves values out of
        # line until the row is under this target.
        op.execute("ALTER TABLE spans SET (toast_tuple_target = 128)")
    op.create_table(
        "scores",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("observation_id", sa.String(16)),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("data_type", sa.String(16), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("string_value", sa.Text()),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("created_ns", _BIG, nullable=False),
    )
    op.create_index("ix_scores_trace", "scores", ["project_id", "trace_id"])
    if op.get_bind().dialect.name == "postgresql":
        # Merging two latency histograms (element-wise sum); SQLite gets the same function from Python.
        op.execute(
            "CREATE OR REPLACE FUNCTION ph_hist_add(a bigint[], b bigint[]) RETURNS bigint[] "
            "LANGUAGE sql IMMUTABLE AS $$ SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i) "
            "FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i) $$"
        )
    _rollup("rollup_minute")
    _rollup("rollup_hour")


def downgrade() -> None:
    for table in (
        "rollup_hour",
        "rollup_minute",
        "scores",
        "spans",
        "traces",
        "api_keys",
        "projects",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ph_hist_add(bigint[], bigint[])")
