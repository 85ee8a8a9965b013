"""Saved views of the trace list: a name and the list's filter query string, per project."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from pilothouse.store import tables as t
from pilothouse.store.sql import SqlStore

MAX_VIEWS = 200  # per project
MAX_NAME_CHARS = 100
MAX_QUERY_CHARS = 4000


class ViewError(ValueError):
    """A view that cannot be saved; the message says why."""


@dataclass(frozen=True, slots=True)
class SavedView:
    """A named filter of the trace list (``query``: the URL's query string, without a cursor)."""

    name: str
    query: str
    created_ns: int


class ViewStore:
    """The ``saved_views`` table; every method is scoped to one project."""

    def __init__(self, store: SqlStore) -> None:
        self.engine = store.engine

    def list(self, project_id: str) -> list[SavedView]:
        """The project's views by name."""
        v = t.saved_views.c
        stmt = select(v.name, v.query, v.created_ns).where(v.project_id == project_id).order_by(v.name)
        with self.engine.connect() as conn:
            return [SavedView(r.name, r.query, r.created_ns) for r in conn.execute(stmt)]

    def save(self, project_id: str, name: str, query: str) -> SavedView:
        """Save (or replace) the view ``name``; ViewError for an empty or long name or query."""
        name = name.strip()
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise ViewError(f"a view's name is 1 to {MAX_NAME_CHARS} printable characters")
        if len(query) > MAX_QUERY_CHARS:
            raise ViewError(f"a view's filters are at most {MAX_QUERY_CHARS} characters")
        v = t.saved_views.c
        view = SavedView(name, query, time.time_ns())
        with self.engine.begin() as conn:
            conn.execute(delete(t.saved_views).where(v.project_id == project_id, v.name == name))
            count = conn.execute(select(v.id).where(v.project_id == project_id)).all()
            if len(count) >= MAX_VIEWS:
                raise ViewError(f"a project keeps at most {MAX_VIEWS} views; delete one first")
            try:
                conn.execute(
                    t.saved_views.insert().values(
                        id=uuid.uuid4().hex,
                        project_id=project_id,
                        name=name,
                        query=query,
                        created_ns=view.created_ns,
                    )
                )
            except IntegrityError:  # saved by another request meanwhile: the last one wins
                raise ViewError(f"the view {name!r} was saved meanwhile; try again") from None
        return view

    def delete(self, project_id: str, name: str) -> bool:
        """Delete the view; False if the project has none of that name."""
        v = t.saved_views.c
        with self.engine.begin() as conn:
            done = conn.execute(delete(t.saved_views).where(v.project_id == project_id, v.name == name))
            return done.rowcount > 0
