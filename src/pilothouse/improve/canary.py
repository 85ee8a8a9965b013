"""Canaries decided by evidence: for each label that splits its traffic between its version (the
control) and a canary version, read the per-trace scores of each arm (the traces whose gateway calls
used that version, since the canary began), apply the gate's sequential test
(:func:`pilothouse.evals.gate.sequential_compare`, never statistics of its own) and, when it decides,
roll the canary back (the label stays on the control) or promote it (the label moves to the canary).
Every decision goes in the prompt's audit list with its figures.

:func:`canary_status` is the one use case behind ``pilothouse prompts canary-status``,
``GET /api/prompts/{name}/canary`` and the prompt page; :class:`CanaryController` is the server's
background job (one process at a time: the ``worker_leases`` row the monitors use)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pilothouse.domain.prompts import PromptEvent, check_label, check_name
from pilothouse.evals.gate import ArmSummary, GateVerdict, SequentialResult, sequential_compare
from pilothouse.prompts import PromptNotFound, PromptRegistry
from pilothouse.store.canaries import ArmSums, CanaryStore, RunningCanary
from pilothouse.store.leased_jobs import LeasedLoop, Leases
from pilothouse.store.sql import SqlStore

__all__ = [
    "CANARY_ACTOR",
    "CanaryController",
    "CanarySettings",
    "CanaryStatus",
    "canary_status",
    "check_canary",
]

log = logging.getLogger("pilothouse.canary")

LEASE_NAME = "canaries"
CANARY_ACTOR = "canary-controller"
DECISIONS = ("canary-promote", "canary-rollback")
_DECISIONS_SHOWN = 20


@dataclass(frozen=True, slots=True)
class CanarySettings:
    """What decides a canary: the score name (None: nothing is decided automatically), the margin
    (in the score's units), the test's alpha, and the scored traces each arm needs first."""

    score_name: str | None = None
    margin: float = 0.02
    alpha: float = 0.05
    min_samples: int = 100

    def for_canary(self, canary: RunningCanary) -> CanarySettings:
        """These settings with the score name and margin ``canary`` was started with, if any."""
        return replace(
            self,
            score_name=canary.score or self.score_name,
            margin=self.margin if canary.margin is None else canary.margin,
        )

    @classmethod
    def of(cls, settings: Any) -> CanarySettings:
        """From the server's settings (``canary_score``, ``canary_margin``, ...)."""
        return cls(
            settings.canary_score, settings.canary_margin, settings.canary_alpha, settings.canary_min_samples
        )


@dataclass(frozen=True, slots=True)
class CanaryStatus:
    """Where a label's canary stands: the running canary (None: none runs) with the test's figures
    now (None without a score name), and the past decisions of the controller, newest first."""

    name: str
    label: str
    canary: RunningCanary | None
    result: SequentialResult | None
    settings: CanarySettings
    decisions: list[PromptEvent]

    def document(self) -> dict[str, Any]:
        """As JSON (the API's answer, the CLI's ``--json``)."""
        running = self.canary
        return {
            "name": self.name,
            "label": self.label,
            "running": running is not None,
            "version": None if running is None else running.version,
            "canary_version": None if running is None else running.canary_version,
            "share": None if running is None else running.share,
            "started_ns": None if running is None else running.started_ns,
            "score": self.settings.score_name,
            "margin": self.settings.margin,
            "alpha": self.settings.alpha,
            "min_samples": self.settings.min_samples,
            "test": None if self.result is None else self.result.document(),
            "decisions": [event.document() for event in self.decisions],
        }


def _summary(sums: ArmSums) -> ArmSummary:
    return ArmSummary(sums.n, sums.total, sums.total_squares)


def check_canary(store: CanaryStore, canary: RunningCanary, settings: CanarySettings) -> SequentialResult:
    """The sequential test of ``canary`` on the scores stored now (pure but for the one read)."""
    assert settings.score_name is not None
    arms = store.arm_sums(
        canary.project_id,
        canary.name,
        (canary.version, canary.canary_version),
        settings.score_name,
        canary.started_ns,
    )
    return sequential_compare(
        _summary(arms[canary.version]),
        _summary(arms[canary.canary_version]),
        margin=settings.margin,
        alpha=settings.alpha,
        min_samples=settings.min_samples,
    )


def canary_status(
    store: SqlStore,
    registry: PromptRegistry,
    settings: CanarySettings,
    project_id: str,
    name: str,
    label: str,
) -> CanaryStatus:
    """The status of ``label``'s canary of prompt ``name``; :class:`PromptNotFound` for an unknown
    prompt."""
    check_name(name)
    check_label(label)
    history = registry.history(project_id, name, limit=1000)
    if not history:
        raise PromptNotFound(f"no prompt named {name!r}")
    registry.get(project_id, name, label=label)  # PromptNotFound: the prompt has no such label
    canaries = CanaryStore(store)
    running = next((c for c in canaries.running(project_id, name) if c.label == label), None)
    result = None
    if running is not None:
        settings = settings.for_canary(running)
        if settings.score_name is not None:
            result = check_canary(canaries, running, settings)
    decisions = [e for e in history if e.action in DECISIONS and e.label == label][:_DECISIONS_SHOWN]
    return CanaryStatus(name, label, running, result, settings, decisions)


class CanaryController:
    """Checks every running canary, once per pass, in whichever process holds the lease."""

    def __init__(
        self,
        store: SqlStore,
        registry: PromptRegistry,
        settings: CanarySettings,
        *,
        interval_s: float = 60.0,
        clock: Callable[[], int] = time.time_ns,
        holder: str | None = None,
    ) -> None:
        self.canaries = CanaryStore(store)
        self.leases = Leases(store)
        self.registry = registry
        self.settings = settings
        self.interval_s = interval_s
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.passes = 0
        self._loop = LeasedLoop(
            "canaries",
            self.run_once,
            lambda: self.leases.release_lease(LEASE_NAME, self.holder),
            self.interval_s,
        )

    def evaluate(self, now_ns: int) -> list[tuple[RunningCanary, SequentialResult]] | None:
        """One pass: the canaries decided (promoted or rolled back) in it; None when another process
        holds the lease. Canaries still inconclusive keep running."""
        ttl_ns = int(max(60.0, 3 * self.interval_s) * 1e9)
        if not self.leases.take_lease(LEASE_NAME, self.holder, now_ns, ttl_ns):
            return None
        decided: list[tuple[RunningCanary, SequentialResult]] = []
        for canary in self.canaries.running():
            if not self.leases.take_lease(LEASE_NAME, self.holder, max(now_ns, self.clock()), ttl_ns):
                log.warning("the canaries lease passed to another process during a pass; it goes on there")
                break
            settings = self.settings.for_canary(canary)
            if settings.score_name is None:
                continue  # nothing decides it: it runs until a person ends it
            try:
                result = check_canary(self.canaries, canary, settings)
                if result.verdict is not GateVerdict.INCONCLUSIVE and self._decide(canary, result, settings):
                    decided.append((canary, result))
            except Exception:  # one broken canary must not stop the others
                log.exception("checking the canary of %s:%s failed", canary.name, canary.label)
        self.passes += 1
        return decided

    def _decide(self, canary: RunningCanary, result: SequentialResult, settings: CanarySettings) -> bool:
        promote = result.verdict is GateVerdict.PASS
        detail = {"score": settings.score_name, **result.document()}
        if not self.canaries.end(canary, promote=promote, actor=CANARY_ACTOR, detail=detail):
            return False  # the label changed under us: a person's change stands
        self.registry.changed(canary.project_id, canary.name)  # every gateway process hears it
        log.warning(
            "canary %s of %s:%s %s: %s",
            canary.canary_version,
            canary.name,
            canary.label,
            "promoted" if promote else "rolled back",
            result.reason,
        )
        return True

    async def run_once(self) -> list[tuple[RunningCanary, SequentialResult]]:
        """One pass in a thread (the reads never block the event loop)."""
        return await asyncio.to_thread(self.evaluate, self.clock()) or []

    def start(self) -> None:
        """Run a pass every ``interval_s`` in the background until :meth:`close`."""
        self._loop.start()

    async def close(self) -> None:
        """Stop and give the lease up (another process takes over at once)."""
        await self._loop.close()
