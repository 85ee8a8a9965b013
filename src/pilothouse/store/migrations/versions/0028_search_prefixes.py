"""SQLite: the full-text index gets prefix indexes of 1 and 2 characters (FTS5 ``prefix='1 2'``), so a
search for a short prefix (``1*``, ``th*``: up to ~100,000 words in a large store) reads one list of
spans instead of merging the lists of every word with that prefix (0.2-0.6 s at 1,000,000 spans). FTS5
cannot add a prefix index to a table, and ``span_search`` is contentless (it cannot re-read its texts),
so the table is made again and every stored span is indexed anew from its row, as 0022 did (minutes on
a large store: docs/performance.md#full-text-search); spans that retention deleted leave the index on
the way. PostgreSQL is unchanged (its GIN index answers a prefix from the sorted words).

Revision ID: 0028
Revises: 0027
"""

from __future__ import annotations

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


def downgrade() -> None:
    _rebuild("")
