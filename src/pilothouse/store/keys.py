"""Projects and API keys in the store's database (a base of :class:`pilothouse.store.sql.SqlStore`):
a key's secret is shown once and stored only as its hash."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import Connection, Engine, and_, select, text

from pilothouse.domain.keys import (
    ApiKey,
    DuplicateKeyName,
    Scope,
    check_key_name,
    hash_secret,
    key_name_folded,
    new_secret,
)
from pilothouse.domain.traces import Project
from pilothouse.store import tables as t

__all__ = ["ProjectsAndKeys", "api_key_from_row"]

FIRST_KEY_LOCK = 7_310_201_126_000_002  # PostgreSQL: the advisory lock of the first key's creation


class ProjectsAndKeys:
    """Projects and their API keys (``engine`` and the dialect's ``_insert`` are the store's)."""

    engine: Engine
    _insert: Any

    def ensure_project(self, project_id: str, name: str | None = None) -> Project:
        """The project ``project_id``, created if missing."""
        with self.engine.begin() as conn:
            row = conn.execute(select(t.projects).where(t.projects.c.id == project_id)).first()
            if row is None:
                conn.execute(
                    self._insert(t.projects)
                    .values(id=project_id, name=name or project_id, created_ns=time.time_ns())
                    .on_conflict_do_nothing()
                )
                return Project(project_id, name or project_id)
            return Project(row.id, row.name)

    def create_api_key(
        self,
        project_id: str,
        name: str,
        scopes: frozenset[Scope],
        *,
        models: frozenset[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key for the project (created if missing) and its secret, which is never stored.
        Raises :class:`DuplicateKeyName` if an active key of the project already has ``name``, and
        ValueError for a name :func:`check_key_name` refuses."""
        check_key_name(name)
        self.ensure_project(project_id)
        key, secret = _new_key(project_id, name, scopes, models=models, rpm=rpm, tpm=tpm)
        k = t.api_keys
        with self.engine.begin() as conn:
            # two concurrent creates of one name take turns: the project's row locked on PostgreSQL,
            # the write lock first on SQLite (so the name read stays free until the insert)
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.execute(select(t.projects.c.id).where(t.projects.c.id == project_id).with_for_update())
            active = conn.execute(
                select(k.c.name).where(k.c.project_id == project_id, k.c.revoked_ns.is_(None))
            ).scalars()
            folded = key_name_folded(name)
            taken = next((n for n in active if key_name_folded(n) == folded), None)
            if taken is not None:
                raise DuplicateKeyName(project_id, taken)
            _insert_key(conn, key, secret)
        return key, secret

    def create_first_key(self, project_id: str, name: str, scopes: frozenset[Scope]) -> str | None:
        """A key's secret when the store holds no key yet, else None: what ``serve`` makes at its first
        start. On PostgreSQL under an advisory lock, so that servers started together on a new
        database make one first key, not one each."""
        key, secret = _new_key(project_id, name, scopes)
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # held until this transaction ends
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_KEY_LOCK})
            else:  # SQLite: a write statement first takes the file's write lock for this transaction
                conn.execute(text("UPDATE api_keys SET id = id WHERE 0"))
            if conn.execute(select(t.api_keys.c.id).limit(1)).first() is not None:
                return None
            conn.execute(  # the project, on this connection (it holds the lock)
                self._insert(t.projects)
                .values(id=project_id, name=project_id, created_ns=time.time_ns())
                .on_conflict_do_nothing()
            )
            _insert_key(conn, key, secret)
        return secret

    def find_api_key(self, secret: str) -> ApiKey | None:
        """The key whose secret is ``secret`` (revoked ones included), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.api_keys).where(t.api_keys.c.secret_hash == hash_secret(secret))
            ).first()
        return api_key_from_row(row._mapping) if row else None

    def list_api_keys(self, project_id: str | None = None) -> list[ApiKey]:
        """Keys, newest first, of one project or all."""
        query = select(t.api_keys).order_by(t.api_keys.c.created_ns.desc())
        if project_id is not None:
            query = query.where(t.api_keys.c.project_id == project_id)
        with self.engine.connect() as conn:
            return [api_key_from_row(r._mapping) for r in conn.execute(query)]

    def revoke_api_key(self, key_id: str, project_id: str | None = None) -> bool:
        """Revoke a key; False if no such active key (in that project, when given)."""
        cond = and_(t.api_keys.c.id == key_id, t.api_keys.c.revoked_ns.is_(None))
        if project_id is not None:
            cond = and_(cond, t.api_keys.c.project_id == project_id)
        with self.engine.begin() as conn:
            result = conn.execute(t.api_keys.update().where(cond).values(revoked_ns=time.time_ns()))
        return result.rowcount > 0


def _new_key(
    project_id: str,
    name: str,
    scopes: frozenset[Scope],
    *,
    models: frozenset[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret (not stored yet)."""
    secret = new_secret()
    key = ApiKey(
        id=uuid.uuid4().hex,
        project_id=project_id,
        name=name,
        prefix=secret[:10],
        scopes=scopes,
        created_ns=time.time_ns(),
        models=models,
        rpm=rpm,
        tpm=tpm,
    )
    return key, secret


def _insert_key(conn: Connection, key: ApiKey, secret: str) -> None:
    """Store ``key`` with its secret's hash (never the secret)."""
    conn.execute(
        t.api_keys.insert().values(
            id=key.id,
            project_id=key.project_id,
            name=key.name,
            prefix=key.prefix,
            secret_hash=hash_secret(secret),
            scopes=",".join(sorted(s.value for s in key.scopes)),
            created_ns=key.created_ns,
            models=",".join(sorted(key.models)) if key.models is not None else None,
            rpm=key.rpm,
            tpm=key.tpm,
        )
    )


def api_key_from_row(row: Any) -> ApiKey:
    """An :class:`ApiKey` from its row of `api_keys` (a mapping)."""
    return ApiKey(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=frozenset(Scope(s) for s in row["scopes"].split(",") if s),
        created_ns=row["created_ns"],
        revoked_ns=row["revoked_ns"],
        models=frozenset(m for m in row["models"].split(",") if m) if row["models"] is not None else None,
        rpm=row["rpm"],
        tpm=row["tpm"],
    )
