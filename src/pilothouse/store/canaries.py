"""The canary controller's queries over the prompt registry's tables and the traces: the canaries that
run, the per-trace scores of each arm (traces whose gateway calls used the prompt at that version),
and the decision that ends a canary, made only if nobody changed the label meanwhile."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, select

from pilothouse.store import tables as t
from pilothouse.store.prompts import PromptStore
from pilothouse.store.sql import SqlStore

__all__ = ["ArmSums", "CanaryStore", "RunningCanary"]


@dataclass(frozen=True, slots=True)
class RunningCanary:
    """A label that splits its traffic: ``version`` (the control) and ``canary_version`` at ``share``,
    since ``started_ns`` (when the canary was last set), with the score name and margin it was started
    with (None: the server's settings decide)."""

    project_id: str
    name: str
    label: str
    version: int
    canary_version: int
    share: float
    started_ns: int
    score: str | None = None  # what decides this canary, when it was started with its own
    margin: float | None = None


@dataclass(frozen=True, slots=True)
class ArmSums:
    """One arm's per-trace values (a trace's scores of the name averaged): count, sum, sum of squares."""

    n: int
    total: float
    total_squares: float


class CanaryStore:
    """Canary queries over a :class:`SqlStore`'s database."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine

    def running(self, project_id: str | None = None, name: str | None = None) -> list[RunningCanary]:
        """The running canaries (of one project or prompt, or all), by project, name and label, each
        with what its start event says decides it."""
        lb, e = t.prompt_labels.c, t.prompt_events.c
        query = select(
            lb.project_id, lb.name, lb.label, lb.version, lb.canary_version, lb.canary_share
        ).where(lb.canary_version.is_not(None))
        if project_id is not None:
            query = query.where(lb.project_id == project_id)
        if name is not None:
            query = query.where(lb.name == name)
        found: list[RunningCanary] = []
        with self.engine.connect() as conn:
            for p, n, label, version, canary, share in conn.execute(
                query.order_by(lb.project_id, lb.name, lb.label)
            ):
                start = conn.execute(
                    select(e.created_ns, e.detail)
                    .where(
                        e.project_id == p,
                        e.name == n,
                        e.label == label,
                        e.action == "canary",
                        e.version == canary,
                    )
                    .order_by(e.seq.desc())
                    .limit(1)
                ).first()
                detail = orjson.loads(start.detail) if start is not None and start.detail else {}
                score, margin = detail.get("score"), detail.get("margin")
                found.append(
                    RunningCanary(
                        p,
                        n,
                        label,
                        int(version),
                        int(canary),
                        float(share or 0.0),
                        0 if start is None else int(start.created_ns),
                        score if isinstance(score, str) else None,
                        float(margin) if isinstance(margin, int | float) else None,
                    )
                )
        return found

    def arm_sums(
        self, project_id: str, name: str, versions: tuple[int, ...], score_name: str, since_ns: int
    ) -> dict[int, ArmSums]:
        """Per version of prompt ``name``: the per-trace means of the scores named ``score_name`` (those
        with a value) of the traces started since ``since_ns`` whose calls used that version."""
        s, tr, sp = t.scores.c, t.traces.c, t.spans.c
        per_trace = (
            select(sp.prompt_version.label("version"), s.trace_id, func.avg(s.value).label("value"))
            .select_from(
                t.scores.join(t.traces, (tr.project_id == s.project_id) & (tr.id == s.trace_id)).join(
                    t.spans, sp.trace_pk == tr.pk
                )
            )
            .where(
                s.project_id == project_id,
                s.name == score_name,
                s.value.is_not(None),
                s.created_ns >= since_ns,
                tr.start_ns >= since_ns,
                sp.project_id == project_id,
                sp.prompt_name == name,
                sp.prompt_version.in_([str(v) for v in versions]),
            )
            .group_by(sp.prompt_version, s.trace_id)
            .subquery()
        )
        query = select(
            per_trace.c.version,
            func.count(),
            func.sum(per_trace.c.value),
            func.sum(per_trace.c.value * per_trace.c.value),
        ).group_by(per_trace.c.version)
        found = {v: ArmSums(0, 0.0, 0.0) for v in versions}
        with self.engine.connect() as conn:
            for version, n, total, squares in conn.execute(query):
                found[int(version)] = ArmSums(int(n), float(total or 0.0), float(squares or 0.0))
        return found

    def end(
        self,
        canary: RunningCanary,
        *,
        promote: bool,
        actor: str,
        detail: Mapping[str, Any],
    ) -> bool:
        """End ``canary``: promote (the label moves to the canary's version) or roll back (the label
        stays, the canary stops), recorded in the audit list with ``detail``. False, and nothing done,
        when the label no longer runs this canary on this version (a person changed it meanwhile)."""
        lb = t.prompt_labels
        now = time.time_ns()
        values: dict[str, Any] = {"canary_version": None, "canary_share": None}
        if promote:
            values |= {"version": canary.canary_version, "updated_by": actor, "updated_ns": now}
        with self.engine.begin() as conn:
            changed = conn.execute(
                lb.update()
                .where(
                    lb.c.project_id == canary.project_id,
                    lb.c.name == canary.name,
                    lb.c.label == canary.label,
                    lb.c.version == canary.version,
                    lb.c.canary_version == canary.canary_version,
                )
                .values(**values)
            ).rowcount
            if not changed:
                return False
            PromptStore._event(
                conn,
                canary.project_id,
                canary.name,
                "canary-promote" if promote else "canary-rollback",
                canary.canary_version,
                canary.label,
                canary.version,
                actor,
                detail,
                now,
            )
        return True
