"""Judge calibrations over a :class:`SqlStore`'s database: each one a new version (1, 2, ...) of the
judge it calibrates (its fingerprint, :func:`pilothouse.evals.calibration.judge_fingerprint`), never
changed once stored."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from pilothouse.domain.calibrations import Calibration, CalibrationMetrics, Judgement
from pilothouse.store import tables as t
from pilothouse.store.rows import pack, unpack
from pilothouse.store.sql import SqlStore

__all__ = ["CalibrationStore"]

_ATTEMPTS = 5  # two calibrations of one judge at once: the loser of the version number tries again


class CalibrationStore:
    """Stored judge calibrations, newest version last."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine
        self._pack = store.dialect == "sqlite"

    def add(
        self,
        project_id: str,
        *,
        fingerprint: str,
        scorer_name: str,
        scorer_type: str,
        judge_model: str | None,
        identity: Mapping[str, Any],
        metrics: CalibrationMetrics,
        judgements: Sequence[Judgement],
        labels_sha256: str,
        labels_source: str | None,
        judge_endpoint: str | None,
    ) -> Calibration:
        """Store a calibration as the next version of its fingerprint in the project."""
        self.store.ensure_project(project_id)
        c = t.judge_calibrations
        verdicts = orjson.dumps([_judgement_dict(j) for j in judgements]).decode()
        row: dict[str, Any] = {
            "project_id": project_id,
            "fingerprint": fingerprint,
            "scorer_name": scorer_name,
            "scorer_type": scorer_type,
            "judge_model": judge_model,
            "identity": orjson.dumps(identity, default=str).decode(),
            "metrics": orjson.dumps(metrics.as_dict()).decode(),
            "n": metrics.n,
            "judgements": pack(verdicts) if self._pack else verdicts,
            "labels_sha256": labels_sha256,
            "labels_source": labels_source,
            "judge_endpoint": judge_endpoint,
        }
        for attempt in range(_ATTEMPTS):
            row |= {"id": uuid.uuid4().hex, "created_ns": time.time_ns()}
            try:
                with self.engine.begin() as conn:
                    newest = conn.execute(
                        select(func.max(c.c.version)).where(
                            c.c.project_id == project_id, c.c.fingerprint == fingerprint
                        )
                    ).scalar_one()
                    row["version"] = int(newest or 0) + 1
                    conn.execute(c.insert().values(**row))
            except IntegrityError:
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            break
        found = self.get(row["id"])
        assert found is not None
        return found

    def get(self, calibration_id: str) -> Calibration | None:
        """A calibration by id."""
        c = t.judge_calibrations
        with self.engine.connect() as conn:
            row = conn.execute(select(c).where(c.c.id == calibration_id)).first()
        return None if row is None else _calibration(row._mapping)

    def latest(self, project_id: str, fingerprint: str) -> Calibration | None:
        """The newest calibration of a judge in a project, or None."""
        c = t.judge_calibrations
        query = (
            select(c)
            .where(c.c.project_id == project_id, c.c.fingerprint == fingerprint)
            .order_by(c.c.version.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _calibration(row._mapping)

    def list_calibrations(
        self, project_id: str, limit: int = 50, fingerprint: str | None = None
    ) -> list[Calibration]:
        """Newest first (without their judgements)."""
        c = t.judge_calibrations
        columns = [col for col in c.columns if col.name != "judgements"]
        query = (
            select(*columns).where(c.c.project_id == project_id).order_by(c.c.created_ns.desc()).limit(limit)
        )
        if fingerprint is not None:
            query = query.where(c.c.fingerprint.startswith(fingerprint.lower(), autoescape=True))
        with self.engine.connect() as conn:
            return [_calibration(row._mapping) for row in conn.execute(query)]


def _judgement_dict(j: Judgement) -> dict[str, Any]:
    return {
        "item_id": j.item_id,
        "label": j.label,
        "value": j.value,
        "passed": j.passed,
        "error": j.error,
        "flipped": j.flipped,
    }


def _calibration(row: Mapping[Any, Any]) -> Calibration:
    raw = row.get("judgements")
    judgements = tuple(
        Judgement(d["item_id"], d["label"], d["value"], d["passed"], d["error"], d["flipped"])
        for d in (orjson.loads(unpack(raw) or "[]") if raw is not None else [])
    )
    return Calibration(
        id=row["id"],
        project_id=row["project_id"],
        fingerprint=row["fingerprint"],
        version=row["version"],
        scorer_name=row["scorer_name"],
        scorer_type=row["scorer_type"],
        judge_model=row["judge_model"],
        identity=orjson.loads(row["identity"]),
        metrics=CalibrationMetrics.from_dict(orjson.loads(row["metrics"])),
        labels_sha256=row["labels_sha256"],
        labels_source=row["labels_source"],
        judge_endpoint=row["judge_endpoint"],
        created_ns=row["created_ns"],
        judgements=judgements,
    )
