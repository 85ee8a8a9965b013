"""SQLite: the full-text index gets prefix indexes of 1 and 2 characters (FTS5 ``prefix='1 2'``), so a
search for a short prefix (``1*``, ``th*``: up to ~100,000 words in a large store) reads one list of
spans instead of merging the lists of every word with that prefix (0.2-0.6 s at 1,000,000 spans). FTS5
cannot add a prefix index to a table, and ``span_search`` is contentless (it cannot re-read its texts),
so the table is made again and every stored span is indexed anew from its row, as 0022 did (minutes on
a large store: docs/performance.md#full-text-search); spans that retention deleted leave the index on
the way. PostgreSQL's GIN index answers a prefix from its sorted words already.

Both databases: indexes for the trace list's environment and release filters (partial: only traces that
have one) and for its sort by tokens, as cost and latency have (a filter on an environment no trace
has, or the sort by tokens, read every trace of the project: 1.4-1.8 s at 1,000,000 spans).

Revision ID: 0028
Revises: 0027
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pilothouse.store.search import sqlite_backfill

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

_TABLE = (
    "CREATE VIRTUAL TABLE span_search USING fts5(body, content='', detail=none, columnsize=0, "
    "tokenize='unicode61 remove_diacritics 2'{prefix})"
)


def _rebuild(prefix: str) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    conn.exec_driver_sql("DROP TABLE span_search")
    conn.exec_driver_sql(_TABLE.format(prefix=prefix))
    sqlite_backfill(conn)
    # one segment: a look-up then reads one list per term, not one per segment the writes left
    conn.exec_driver_sql("INSERT INTO span_search(span_search) VALUES ('optimize')")


def upgrade() -> None:
    _rebuild(", prefix='1 2'")
    for column in ("environment", "release"):
        op.create_index(
            f"ix_traces_{column}",
            "traces",
            ["project_id", column, "start_ns", "pk"],
            sqlite_where=sa.text(f"{column} IS NOT NULL"),
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
        )
    op.create_index("ix_traces_tokens", "traces", ["project_id", "total_tokens", "start_ns"])


def downgrade() -> None:
    for name in ("ix_traces_tokens", "ix_traces_release", "ix_traces_environment"):
        op.drop_index(name, table_name="traces")
    _rebuild("")
