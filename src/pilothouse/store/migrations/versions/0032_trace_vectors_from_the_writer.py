"""The traces' search vectors from the batch writer (issue 26: PostgreSQL's CPU per span).

PostgreSQL only. The trigger that computed ``traces.search`` with PostgreSQL's text parser on every
insert and every merge of a trace row (``BEFORE INSERT OR UPDATE``, migration 0022) now runs only on an
update that changes one of the fields the vector is made of (name, input, output, metadata, tags); the
writer gives a new trace its vector (``pilothouse.store.search.pg_trace_vector``: the same lexemes,
without positions), and a new trace's row goes in by ``COPY``, which a row trigger on insert would
slow down (PostgreSQL inserts rows one at a time into a table with one). Stored vectors are kept.

``ph_hist_add`` (the rollups' histogram sum, run for each rollup row a batch adds to) becomes a loop in
PL/pgSQL over the shorter array's non-zero values: ~5.5-7 us a call instead of ~17 (an SQL function
over ``unnest ... WITH ORDINALITY`` with a sorted ``array_agg``, which PostgreSQL cannot inline). The
same sums; two empty histograms add up to an empty one (NULL before).

Revision ID: 0032
Revises: 0031
"""

from __future__ import annotations

from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

_FIELDS = ("name", "input", "output", "metadata", "tags")  # those of PG_TRACE_DOCUMENT (store/search.py)

_HIST_ADD = (  # the shorter array's values added into the longer one's, its zeros skipped
    "CREATE OR REPLACE FUNCTION ph_hist_add(a bigint[], b bigint[]) RETURNS bigint[] "
    "LANGUAGE plpgsql IMMUTABLE AS $$ DECLARE r bigint[]; s bigint[]; x bigint; i int := 0; BEGIN "
    "IF coalesce(cardinality(a), 0) >= coalesce(cardinality(b), 0) THEN r := a; s := b; "
    "ELSE r := b; s := a; END IF; "
    "FOREACH x IN ARRAY coalesce(s, '{}') LOOP i := i + 1; "
    "IF x <> 0 THEN r[i] := coalesce(r[i], 0) + x; END IF; END LOOP; RETURN r; END $$"
)
_HIST_ADD_0001 = (  # migration 0001's
    "CREATE OR REPLACE FUNCTION ph_hist_add(a bigint[], b bigint[]) RETURNS bigint[] "
    "LANGUAGE sql IMMUTABLE AS $$ SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i) "
    "FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i) $$"
)


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
    conn.exec_driver_sql(_HIST_ADD)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    conn.exec_driver_sql("DROP TRIGGER traces_search ON traces")
    conn.exec_driver_sql(
        "CREATE TRIGGER traces_search BEFORE INSERT OR UPDATE ON traces "
        "FOR EACH ROW EXECUTE FUNCTION ph_traces_search()"
    )
    conn.exec_driver_sql(_HIST_ADD_0001)
