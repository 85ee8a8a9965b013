"""Evals: datasets and their versions, items, runs, results, scores and the response cache.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BIG = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "eval_datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("created_ns", _BIG, nullable=False),
        sa.UniqueConstraint("project_id", "name", name="uq_eval_datasets_name"),
    )
    op.create_table(
        "eval_dataset_versions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dataset_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("source", sa.Text()),
        sa.Column("created_ns", _BIG, nullable=False),
        sa.UniqueConstraint("dataset_id", "version", name="uq_eval_dataset_versions"),
    )
    op.create_table(
        "eval_items",
        sa.Column("version_id", sa.String(32), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("input", sa.Text()),
        sa.Column("messages", sa.Text()),
        sa.Column("expected", sa.Text()),
        sa.Column("metadata", sa.Text()),
        sa.Column("source_trace_id", sa.String(32)),
        sa.UniqueConstraint("version_id", "item_id", name="uq_eval_items_id"),
    )
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("dataset", sa.Text()),
        sa.Column("dataset_version_id", sa.String(32)),
        sa.Column("dataset_version", sa.Integer()),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("items_total", sa.Integer()),
        sa.Column("scorers", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text()),
        sa.Column("created_ns", _BIG, nullable=False),
        sa.Column("finished_ns", _BIG),
    )
    op.create_index("ix_eval_runs_project", "eval_runs", ["project_id", "created_ns"])
    op.create_table(
        "eval_results",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("item_id", sa.Text(), primary_key=True),
        sa.Column("epoch", sa.Integer(), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("output", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("latency_ms", sa.Float()),
        sa.Column("input_tokens", sa.Integer()),
        sa.Column("output_tokens", sa.Integer()),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("judge_input_tokens", sa.Integer()),
        sa.Column("judge_output_tokens", sa.Integer()),
        sa.Column("judge_cost_usd", sa.Float()),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("created_ns", _BIG, nullable=False),
    )
    op.create_index("ix_eval_results_order", "eval_results", ["run_id", "position", "epoch"])
    op.create_table(
        "eval_scores",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("scorer", sa.Text(), primary_key=True),
        sa.Column("item_id", sa.Text(), primary_key=True),
        sa.Column("epoch", sa.Integer(), primary_key=True),
        sa.Column("value", sa.Float()),
        sa.Column("passed", sa.Boolean()),
        sa.Column("error", sa.Text()),
        sa.Column("reason", sa.Text()),
    )
    op.create_table(
        "eval_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("input_tokens", sa.Integer()),
        sa.Column("output_tokens", sa.Integer()),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("latency_ms", sa.Float()),
        sa.Column("created_ns", _BIG, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("eval_cache")
    op.drop_table("eval_scores")
    op.drop_index("ix_eval_results_order", "eval_results")
    op.drop_table("eval_results")
    op.drop_index("ix_eval_runs_project", "eval_runs")
    op.drop_table("eval_runs")
    op.drop_table("eval_items")
    op.drop_table("eval_dataset_versions")
    op.drop_table("eval_datasets")
