"""PostgreSQL: the span texts (``input``, ``output``, ``attributes``) become ``bytea``, so that long ones
are stored packed (lz4/zstd, as on SQLite): PostgreSQL compresses only rows over ~2 KB itself and a
span row is ~1.3 KB. Stored texts become their UTF-8 bytes (read back as before); SQLite is unchanged.

Revision ID: 0025
Revises: 0022
"""

from __future__ import annotations

from alembic import op

revision = "0025"
down_revision = "0022"
branch_labels = None
depends_on = None

_COLUMNS = ("input", "output", "attributes")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    changes = ", ".join(f"ALTER COLUMN {c} TYPE bytea USING convert_to({c}, 'UTF8')" for c in _COLUMNS)
    op.execute(f"ALTER TABLE spans {changes}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from pilothouse.store.rows import unpack

    # Packed texts are unpacked here (SQL cannot), written back as UTF-8, then the columns become text.
    packed = " OR ".join(
        f"(substr({c}, 1, 4) = '\\x28b52ffd'::bytea OR (octet_length({c}) >= 4 AND get_byte({c}, 2) = 0 "
        f"AND get_byte({c}, 3) = 0))"
        for c in _COLUMNS
    )
    rows = bind.exec_driver_sql(f"SELECT pk, {', '.join(_COLUMNS)} FROM spans WHERE {packed}").all()
    for pk, *values in rows:
        texts = [None if v is None else (unpack(bytes(v)) or "").encode() for v in values]
        bind.exec_driver_sql(
            f"UPDATE spans SET {', '.join(f'{c} = %s' for c in _COLUMNS)} WHERE pk = %s", (*texts, pk)
        )
    changes = ", ".join(f"ALTER COLUMN {c} TYPE text USING convert_from({c}, 'UTF8')" for c in _COLUMNS)
    op.execute(f"ALTER TABLE spans {changes}")
