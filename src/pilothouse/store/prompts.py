"""The prompt registry's tables over a :class:`SqlStore`'s database: versions (never changed once
stored), labels, and the audit list. Every change writes its event in the same transaction, so the
newest event's ``seq`` says whether anything changed since a process last looked."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Connection, and_, func, select
from sqlalchemy.exc import IntegrityError

from pilothouse.domain.prompts import PromptEvent, PromptSummary, PromptVersion, labels_of
from pilothouse.store import tables as t
from pilothouse.store.sql import SqlStore

__all__ = ["PromptStore", "UnknownVersion"]

_ATTEMPTS = 5  # two creates of one prompt at once: the loser of the version number tries again


class UnknownVersion(LookupError):
    """A label was to point at a version that is not stored."""


class PromptStore:
    """Stored prompts of every project."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine
        self._insert = store._insert

    # -- writing ------------------------------------------------------------------------------------

    def add_version(
        self, project_id: str, prompt: PromptVersion, *, actor: str | None, labels: tuple[str, ...] = ()
    ) -> PromptVersion:
        """Store ``prompt`` as the next version of its name (its ``version`` is ignored) and point
        ``labels`` at it; both are events of the audit list."""
        self.store.ensure_project(project_id)
        v = t.prompt_versions
        config = {
            "model": prompt.model,
            "parameters": dict(prompt.parameters),
            "tools": None if prompt.tools is None else [dict(x) for x in prompt.tools],
            "response_format": None if prompt.response_format is None else dict(prompt.response_format),
        }
        template = prompt.template if isinstance(prompt.template, str) else [dict(m) for m in prompt.template]
        row: dict[str, Any] = {
            "project_id": project_id,
            "name": prompt.name,
            "kind": prompt.kind,
            "template": orjson.dumps(template).decode(),
            "config": orjson.dumps(config).decode(),
            "message": prompt.message,
            "created_by": actor,
        }
        for attempt in range(_ATTEMPTS):
            row["created_ns"] = now = time.time_ns()
            try:
                with self.engine.begin() as conn:
                    newest = conn.execute(
                        select(func.max(v.c.version)).where(
                            v.c.project_id == project_id, v.c.name == prompt.name
                        )
                    ).scalar_one()
                    row["version"] = number = int(newest or 0) + 1
                    conn.execute(v.insert().values(**row))
                    self._event(conn, project_id, prompt.name, "create", number, None, None, actor, {}, now)
                    for label in labels:
                        self._move(conn, project_id, prompt.name, label, number, actor, "label", {}, now)
            except IntegrityError:
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            break
        found = self.get(project_id, prompt.name, version=row["version"])
        assert found is not None
        return found

    def set_label(
        self,
        project_id: str,
        name: str,
        label: str,
        version: int,
        *,
        actor: str | None,
        action: str = "label",
        detail: Mapping[str, Any] | None = None,
    ) -> int | None:
        """Point ``label`` at ``version`` (which must be stored: :class:`UnknownVersion` otherwise) and
        return where it pointed before (None: nowhere)."""
        with self.engine.begin() as conn:
            v = t.prompt_versions
            stored = conn.execute(
                select(v.c.version).where(
                    v.c.project_id == project_id, v.c.name == name, v.c.version == version
                )
            ).first()
            if stored is None:
                raise UnknownVersion(f"prompt {name!r} has no version {version}")
            return self._move(
                conn, project_id, name, label, version, actor, action, detail or {}, time.time_ns()
            )

    def set_canary(
        self,
        project_id: str,
        name: str,
        label: str,
        version: int | None,
        share: float,
        *,
        actor: str | None,
        decide: Mapping[str, Any] | None = None,
    ) -> int:
        """Send ``share`` of ``label``'s traffic to ``version`` (None: stop the canary); returns the
        version the label itself points at. :class:`UnknownVersion` when the label points nowhere or
        the version is not stored."""
        lb, v = t.prompt_labels, t.prompt_versions
        where = (lb.c.project_id == project_id, lb.c.name == name, lb.c.label == label)
        with self.engine.begin() as conn:
            main = conn.execute(select(lb.c.version).where(*where)).scalar()
            if main is None:
                raise UnknownVersion(f"prompt {name!r} has no label {label!r} to run a canary on")
            if version is not None:
                stored = conn.execute(
                    select(v.c.version).where(
                        v.c.project_id == project_id, v.c.name == name, v.c.version == version
                    )
                ).first()
                if stored is None:
                    raise UnknownVersion(f"prompt {name!r} has no version {version}")
            values = {"canary_version": version, "canary_share": None if version is None else share}
            conn.execute(lb.update().where(*where).values(**values))
            # what decides this canary (a score name, a margin) rides on its start event
            detail = {"share": share, **(decide or {})} if version is not None else {"stopped": True}
            self._event(
                conn, project_id, name, "canary", version, label, int(main), actor, detail, time.time_ns()
            )
        return int(main)

    def canary(self, project_id: str, name: str, label: str) -> tuple[PromptVersion, float] | None:
        """The canary of a label (its version and share), or None."""
        lb = t.prompt_labels
        with self.engine.connect() as conn:
            row = conn.execute(
                select(lb.c.canary_version, lb.c.canary_share).where(
                    lb.c.project_id == project_id, lb.c.name == name, lb.c.label == label
                )
            ).first()
        if row is None or row.canary_version is None:
            return None
        found = self.get(project_id, name, version=int(row.canary_version))
        return None if found is None else (found, float(row.canary_share or 0.0))

    def add_event(
        self,
        project_id: str,
        name: str,
        action: str,
        *,
        version: int | None,
        label: str | None,
        actor: str | None,
        detail: Mapping[str, Any],
    ) -> None:
        """Record an event that changes nothing (a refused promotion)."""
        with self.engine.begin() as conn:
            self._event(conn, project_id, name, action, version, label, None, actor, detail, time.time_ns())

    def _move(
        self,
        conn: Connection,
        project_id: str,
        name: str,
        label: str,
        version: int,
        actor: str | None,
        action: str,
        detail: Mapping[str, Any],
        now: int,
    ) -> int | None:
        lb = t.prompt_labels
        where = (lb.c.project_id == project_id, lb.c.name == name, lb.c.label == label)
        row = conn.execute(select(lb.c.version, lb.c.canary_version).where(*where)).first()
        previous = None if row is None else row.version
        if action == "label" and row is not None and row.version == version:
            # already there: nothing moved, nothing to record, and a running canary goes on (only a
            # move ends it; 'prompts canary --stop' stops it)
            return int(row.version)
        # moving a label ends its canary: the canary was promoted, or rolled back
        values = {
            "version": version,
            "updated_by": actor,
            "updated_ns": now,
            "canary_version": None,
            "canary_share": None,
        }
        statement = self._insert(lb).values(project_id=project_id, name=name, label=label, **values)
        conn.execute(
            statement.on_conflict_do_update(index_elements=["project_id", "name", "label"], set_=values)
        )
        self._event(conn, project_id, name, action, version, label, previous, actor, detail, now)
        return None if previous is None else int(previous)

    @staticmethod
    def _event(
        conn: Connection,
        project_id: str,
        name: str,
        action: str,
        version: int | None,
        label: str | None,
        previous: int | None,
        actor: str | None,
        detail: Mapping[str, Any],
        now: int,
    ) -> None:
        conn.execute(
            t.prompt_events.insert().values(
                project_id=project_id,
                name=name,
                action=action,
                version=version,
                label=label,
                previous_version=previous,
                actor=actor,
                detail=orjson.dumps(dict(detail), default=str).decode(),
                created_ns=now,
            )
        )

    # -- reading ------------------------------------------------------------------------------------

    def get(
        self, project_id: str, name: str, *, label: str | None = None, version: int | None = None
    ) -> PromptVersion | None:
        """A version by number, by label (``latest``: the newest), or the newest; None if absent."""
        v, lb = t.prompt_versions, t.prompt_labels
        with self.engine.connect() as conn:
            if version is None and label is not None and label != "latest":
                version = conn.execute(
                    select(lb.c.version).where(
                        lb.c.project_id == project_id, lb.c.name == name, lb.c.label == label
                    )
                ).scalar()
                if version is None:
                    return None
            query = select(v).where(v.c.project_id == project_id, v.c.name == name)
            if version is not None:
                query = query.where(v.c.version == version)
            row = conn.execute(query.order_by(v.c.version.desc()).limit(1)).first()
            if row is None:
                return None
            labels, latest = self._labels(conn, project_id, name)
        return _version(row._mapping, labels_of(row.version, labels, latest))

    def versions(self, project_id: str, name: str, limit: int = 200) -> list[PromptVersion]:
        """The versions of a prompt, newest first."""
        v = t.prompt_versions
        query = (
            select(v)
            .where(v.c.project_id == project_id, v.c.name == name)
            .order_by(v.c.version.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            labels, latest = self._labels(conn, project_id, name)
        return [_version(r._mapping, labels_of(r.version, labels, latest)) for r in rows]

    def list_prompts(self, project_id: str, limit: int = 500) -> list[PromptSummary]:
        """The project's prompts by name, each with its newest version and labels."""
        v, lb = t.prompt_versions, t.prompt_labels
        newest = (
            select(v.c.name, func.max(v.c.version).label("latest"), func.max(v.c.created_ns).label("updated"))
            .where(v.c.project_id == project_id)
            .group_by(v.c.name)
            .subquery()
        )
        query = (
            select(newest.c.name, newest.c.latest, newest.c.updated, v.c.kind)
            .join(
                v,
                and_(v.c.project_id == project_id, v.c.name == newest.c.name, v.c.version == newest.c.latest),
            )
            .order_by(newest.c.name)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            labels: dict[str, dict[str, int]] = {}
            for name, label, at in conn.execute(
                select(lb.c.name, lb.c.label, lb.c.version).where(lb.c.project_id == project_id)
            ):
                labels.setdefault(name, {})[label] = at
        return [
            PromptSummary(r.name, int(r.latest), labels.get(r.name, {}), int(r.updated), r.kind) for r in rows
        ]

    def history(self, project_id: str, name: str | None = None, limit: int = 100) -> list[PromptEvent]:
        """The audit list, newest first: of one prompt, or of every prompt of the project."""
        e = t.prompt_events
        query = select(e).where(e.c.project_id == project_id)
        if name is not None:
            query = query.where(e.c.name == name)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(e.c.seq.desc()).limit(limit)).all()
        return [_event(r._mapping) for r in rows]

    def last_seq(self) -> int:
        """The newest event's number over every project (0: none): what a process polls."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(t.prompt_events.c.seq))).scalar() or 0)

    def changed_since(self, seq: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        """(seq, project, name) of the events after ``seq``, oldest first."""
        e = t.prompt_events
        query = select(e.c.seq, e.c.project_id, e.c.name).where(e.c.seq > seq).order_by(e.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [(int(s), p, n) for s, p, n in conn.execute(query)]

    @staticmethod
    def _labels(conn: Connection, project_id: str, name: str) -> tuple[dict[str, int], int]:
        lb, v = t.prompt_labels, t.prompt_versions
        labels = dict(
            conn.execute(
                select(lb.c.label, lb.c.version).where(lb.c.project_id == project_id, lb.c.name == name)
            ).all()
        )
        latest = conn.execute(
            select(func.max(v.c.version)).where(v.c.project_id == project_id, v.c.name == name)
        ).scalar()
        return labels, int(latest or 0)


def _version(row: Mapping[Any, Any], labels: tuple[str, ...]) -> PromptVersion:
    template = orjson.loads(row["template"])
    config = orjson.loads(row["config"])
    tools = config.get("tools")
    return PromptVersion(
        name=row["name"],
        version=int(row["version"]),
        kind=row["kind"],
        template=template if isinstance(template, str) else tuple(template),
        model=config.get("model"),
        parameters=config.get("parameters") or {},
        tools=None if tools is None else tuple(tools),
        response_format=config.get("response_format"),
        message=row["message"],
        created_by=row["created_by"],
        created_ns=int(row["created_ns"]),
        labels=labels,
        project_id=row["project_id"],
    )


def _event(row: Mapping[Any, Any]) -> PromptEvent:
    return PromptEvent(
        name=row["name"],
        action=row["action"],
        version=row["version"],
        label=row["label"],
        previous=row["previous_version"],
        actor=row["actor"],
        created_ns=int(row["created_ns"]),
        detail=orjson.loads(row["detail"]) if row["detail"] else {},
        seq=int(row["seq"]),
    )
