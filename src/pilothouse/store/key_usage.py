"""When each virtual key last made a gateway call, from the key rollups (no scan of spans): the last
UTC day with calls from ``rollup_dim_day``, then the last minute of that day from ``rollup_dim_minute``
(the day, when its minutes were pruned)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from pilothouse.store import tables as t
from pilothouse.store.sql import SqlStore

__all__ = ["keys_last_used"]


def keys_last_used(store: SqlStore, project_id: str, key_ids: Sequence[str]) -> dict[str, int]:
    """Key id -> the start (Unix seconds) of the last minute (else day) with a gateway call by it;
    keys with none are left out."""
    if not key_ids:
        return {}
    day, minute = t.rollup_dim_day.c, t.rollup_dim_minute.c
    out: dict[str, int] = {}
    with store.engine.connect() as conn:
        days = conn.execute(
            select(day.value, func.max(day.bucket))
            .where(day.project_id == project_id, day.dimension == "key", day.value.in_(list(key_ids)))
            .group_by(day.value)
        ).all()
        for key_id, last_day in days:
            last_minute = conn.execute(
                select(func.max(minute.bucket)).where(
                    minute.project_id == project_id,
                    minute.bucket >= last_day,
                    minute.bucket < last_day + 86_400,
                    minute.dimension == "key",
                    minute.value == key_id,
                )
            ).scalar()
            out[str(key_id)] = int(last_minute if last_minute is not None else last_day)
    return out
