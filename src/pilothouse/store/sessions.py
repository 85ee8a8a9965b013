"""The web UI's ended sessions: a logged-out session id is kept until its cookie would have expired."""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from pilothouse.store import tables as t
from pilothouse.store.sql import SqlStore


class SessionStore:
    """Revoked session ids of the web UI (a session cookie itself is signed, never stored)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def revoke(self, session_id: str, expires_ns: int) -> None:
        """End ``session_id`` for good (kept until ``expires_ns``, when its cookie is dead anyway);
        expired entries are dropped on the way."""
        now = time.time_ns()
        c = t.revoked_sessions
        with self.store.engine.begin() as conn:
            conn.execute(delete(c).where(c.c.expires_ns < now))
            conn.execute(
                self.store._insert(c)
                .values(session_id=session_id, expires_ns=expires_ns)
                .on_conflict_do_nothing()
            )

    def is_revoked(self, session_id: str) -> bool:
        """True if ``session_id`` logged out."""
        c = t.revoked_sessions
        with self.store.engine.connect() as conn:
            return (
                conn.execute(select(c.c.session_id).where(c.c.session_id == session_id)).first() is not None
            )
