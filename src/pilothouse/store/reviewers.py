"""The people who log in to review (:mod:`pilothouse.quality.review`): a user name, a display name and a
scrypt hash of their password, per project."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from pilothouse.domain.review import Reviewer, ReviewError
from pilothouse.store import tables as t
from pilothouse.store.sql import SqlStore

__all__ = ["ReviewerStore"]


class ReviewerStore:
    """Reviewers of every project; each method names the project it reads or writes."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine

    def add_user(self, project_id: str, username: str, display_name: str, password_hash: str) -> Reviewer:
        """A new reviewer; :class:`ReviewError` when the name is taken in the project."""
        self.store.ensure_project(project_id)
        user = Reviewer(uuid.uuid4().hex, project_id, username, display_name, time.time_ns())
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.review_users.insert().values(
                        id=user.id,
                        project_id=project_id,
                        username=username,
                        display_name=display_name,
                        password_hash=password_hash,
                        created_ns=user.created_ns,
                    )
                )
        except IntegrityError:
            raise ReviewError(f"there is already a user {username!r} in project {project_id!r}") from None
        return user

    def user_with_hash(self, project_id: str, username: str) -> tuple[Reviewer, str] | None:
        """The reviewer of that name and their password hash, or None."""
        u = t.review_users
        with self.engine.connect() as conn:
            row = conn.execute(
                select(u).where(u.c.project_id == project_id, u.c.username == username)
            ).first()
        return None if row is None else (_user(row), row.password_hash)

    def get_user(self, user_id: str) -> Reviewer | None:
        """A reviewer by id (disabled ones too: the caller checks)."""
        u = t.review_users
        with self.engine.connect() as conn:
            row = conn.execute(select(u).where(u.c.id == user_id)).first()
        return None if row is None else _user(row)

    def list_users(self, project_id: str) -> list[Reviewer]:
        """The project's reviewers by name."""
        u = t.review_users
        with self.engine.connect() as conn:
            rows = conn.execute(select(u).where(u.c.project_id == project_id).order_by(u.c.username))
            return [_user(r) for r in rows]

    def disable_user(self, project_id: str, username: str) -> bool:
        """Stop a reviewer logging in; False when there is no such user."""
        u = t.review_users
        with self.engine.begin() as conn:
            done = conn.execute(
                update(u)
                .where(u.c.project_id == project_id, u.c.username == username)
                .values(disabled_ns=time.time_ns())
            )
        return bool(done.rowcount)


def _user(row: Any) -> Reviewer:
    return Reviewer(
        id=row.id,
        project_id=row.project_id,
        username=row.username,
        display_name=row.display_name,
        created_ns=row.created_ns,
        disabled=row.disabled_ns is not None,
    )
