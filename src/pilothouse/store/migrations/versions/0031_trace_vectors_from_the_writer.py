"""The traces' search vectors from the batch writer (issue 26: PostgreSQL's CPU per span).

PostgreSQL only. The trigger that computed ``traces.search`` with PostgreSQL's text parser on every
insert and every merge of a trace row (``BEFORE INSERT OR UPDATE``, migration 0022) now runs only on an
update that changes one of the fields the vector is made of (name, input, output, metadata, tags); the
writer gives a new trace its vector (``pilothouse.store.search.pg_trace_vector``: the same lexemes,
without positions), and a new trace's row goes in by ``COPY``, which a row trigger on insert would
slow down (PostgreSQL inserts rows one at a time into a table with one). Stored vectors are kept.

Revision ID: 0031
Revises: 0030
"""

from __future__ import annotations

from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

_FIELDS = ("name", "input", "output", "metadata", "tags")  # those of PG_TRACE_DOCUMENT (store/search.py)


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    changed = " OR ".join(f"OLD.{f} IS DISTINCT FROM NEW.{f}" for f in _FIELDS)
    conn.exec_driver_sql("DROP TRIGGER traces_search ON traces")
    conn.exec_driver_sql(
        f"CREATE TRIGGER traces_search BEFORE UPDATE OF {', '.join(_FIELDS)} ON traces "
        f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION ph_traces_search()"
    )


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    conn.exec_driver_sql("DROP TRIGGER traces_search ON traces")
    conn.exec_driver_sql(
        "CREATE TRIGGER traces_search BEFORE INSERT OR UPDATE ON traces "
        "FOR EACH ROW EXECUTE FUNCTION ph_traces_search()"
    )
