"""Full-text search over spans (issue 23, item 6) and saved views of the trace list (item 7).

SQLite: ``span_search``, a contentless FTS5 table keyed by the span's key, which the batch writer fills.
PostgreSQL: ``spans.search`` and ``traces.search`` (tsvector) with GIN indexes; the batch writer
gives a span its vector (its texts are packed in the database from 0025 on), a trigger a trace's.
Stored spans (and traces) are indexed here, 5,000 at a time (``pilothouse.store.search`` says what is
indexed).

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pilothouse.store.search import BACKFILL_BATCH as BATCH
from pilothouse.store.search import PG_SPAN_DOCUMENT, PG_TRACE_DOCUMENT, sqlite_backfill

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saved_views",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("project_id", "name", name="uq_saved_views_name"),
    )
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(
            "CREATE VIRTUAL TABLE span_search USING fts5(body, content='', detail=none, columnsize=0, "
            "tokenize='unicode61 remove_diacritics 2')"
        )
        # the largest span key given, noted before spans are deleted (store/retention.py)
        conn.exec_driver_sql(
            "CREATE TABLE span_search_top (id INTEGER PRIMARY KEY CHECK (id = 1), top INTEGER NOT NULL)"
        )
        sqlite_backfill(conn)
        return
    for table, doc in (("spans", PG_SPAN_DOCUMENT), ("traces", PG_TRACE_DOCUMENT)):
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN search tsvector")
        if table == "traces":  # a span's vector comes from the writer (its texts are packed: 0025)
            conn.exec_driver_sql(
                f"CREATE FUNCTION ph_{table}_search() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"NEW.search := {doc.format(p='NEW.')}; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {table}_search BEFORE INSERT OR UPDATE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION ph_{table}_search()"
            )
        top = conn.exec_driver_sql(f"SELECT coalesce(max(pk), 0) FROM {table}").scalar_one()
        for start in range(0, top, BATCH):
            conn.exec_driver_sql(
                f"UPDATE {table} SET search = {doc.format(p='')} WHERE pk > %s AND pk <= %s",
                (start, start + BATCH),
            )
        conn.exec_driver_sql(f"CREATE INDEX ix_{table}_search ON {table} USING gin (search)")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("DROP TABLE span_search")
        conn.exec_driver_sql("DROP TABLE span_search_top")
    else:
        conn.exec_driver_sql("DROP TRIGGER traces_search ON traces")
        conn.exec_driver_sql("DROP FUNCTION ph_traces_search()")
        for table in ("spans", "traces"):
            conn.exec_driver_sql(f"DROP INDEX ix_{table}_search")
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN search")
    op.drop_table("saved_views")
