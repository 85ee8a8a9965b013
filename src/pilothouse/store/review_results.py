"""What reviews say, read back for the review service: an item's reviews, every reviewer's answers to a
score config, the automated scores of the same name on those traces, and the corrected outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, select

from pilothouse.domain.review import Review, ReviewQueue, ReviewScore
from pilothouse.domain.traces import ScoreSource
from pilothouse.store import tables as t
from pilothouse.store.sql import SqlStore

__all__ = ["ReviewResults"]


class ReviewResults:
    """Reads of stored reviews; each method names the project it reads."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine

    def reviews_of(self, project_id: str, item_id: str) -> list[Review]:
        """Every review of an item with its scores, oldest first."""
        r, s = t.reviews, t.review_scores
        with self.engine.connect() as conn:
            rows = list(
                conn.execute(
                    select(r)
                    .where(r.c.project_id == project_id, r.c.item_id == item_id)
                    .order_by(r.c.created_ns)
                )
            )
            scores: dict[str, list[ReviewScore]] = {}
            for row in conn.execute(select(s).where(s.c.project_id == project_id, s.c.item_id == item_id)):
                scores.setdefault(row.reviewer, []).append(_score(row))
        return [
            Review(
                item_id=row.item_id,
                trace_id=row.trace_id,
                reviewer=row.reviewer,
                skipped=bool(row.skipped),
                corrected_output=row.corrected_output,
                comment=row.comment,
                created_ns=row.created_ns,
                scores=tuple(scores.get(row.reviewer, ())),
            )
            for row in rows
        ]

    def human_scores(self, project_id: str, config_name: str, limit: int = 100_000) -> list[ReviewScore]:
        """Every reviewer's answer to one score config in the project."""
        s = t.review_scores
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(s)
                .where(s.c.project_id == project_id, s.c.config_name == config_name)
                .order_by(s.c.trace_id, s.c.reviewer)
                .limit(limit)
            )
            return [_score(row) for row in rows]

    def automated_scores(
        self, project_id: str, name: str, trace_ids: Sequence[str]
    ) -> list[tuple[str, str, float | None, str | None]]:
        """(trace id, source, value, text) of the scores named ``name`` on those traces that no person
        gave (judges, code, online evaluators, detectors)."""
        sc = t.scores
        out: list[tuple[str, str, float | None, str | None]] = []
        with self.engine.connect() as conn:
            for start in range(0, len(trace_ids), 500):
                chunk = list(trace_ids[start : start + 500])
                out.extend(
                    (row.trace_id, row.source, row.value, row.string_value)
                    for row in conn.execute(
                        select(sc.c.trace_id, sc.c.source, sc.c.value, sc.c.string_value).where(
                            sc.c.project_id == project_id,
                            sc.c.name == name,
                            sc.c.trace_id.in_(chunk),
                            sc.c.source != ScoreSource.HUMAN.value,
                        )
                    )
                )
        return out

    def corrections(self, project_id: str, queue: ReviewQueue | None = None) -> dict[str, str]:
        """trace id -> the newest corrected output a reviewer wrote (in ``queue`` when given)."""
        r, i = t.reviews, t.review_items
        query = (
            select(r.c.trace_id, r.c.corrected_output)
            .where(r.c.project_id == project_id, r.c.corrected_output.is_not(None), r.c.skipped.is_(False))
            .order_by(r.c.created_ns)
        )
        if queue is not None:
            query = query.join(i, and_(i.c.id == r.c.item_id)).where(i.c.queue_id == queue.id)
        with self.engine.connect() as conn:
            return {row.trace_id: row.corrected_output for row in conn.execute(query)}


def _score(row: Any) -> ReviewScore:
    return ReviewScore(
        item_id=row.item_id,
        trace_id=row.trace_id,
        config_name=row.config_name,
        reviewer=row.reviewer,
        value=row.value,
        string_value=row.string_value,
        created_ns=row.created_ns,
    )
