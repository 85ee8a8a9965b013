"""The canary controller over a real store (SQLite and PostgreSQL): traces whose gateway calls used each
version of a prompt, scored; a regressing canary is rolled back, a good one promoted, an A/A one with
little evidence keeps running; every decision is in the prompt's history with its figures; a label a
person moved meanwhile is left alone; one process at a time holds the job."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest

from pilothouse.domain.scores import make_score
from pilothouse.domain.traces import Observation, ObservationKind, SpanRecord, Status, TraceAttributes, Usage
from pilothouse.evals.gate import GateVerdict
from pilothouse.improve.canary import CANARY_ACTOR, CanaryController, CanarySettings, canary_status
from pilothouse.prompts import PromptError, PromptRegistry
from pilothouse.store.canaries import CanaryStore
from pilothouse.store.monitors import MonitorStore
from pilothouse.store.sql import SqlStore

pytestmark = pytest.mark.slow  # hundreds of traced calls written to two databases per test

SETTINGS = CanarySettings(score_name="correct", margin=0.02, alpha=0.05, min_samples=50)


def _registry(store: SqlStore, canary_version: int) -> PromptRegistry:
    registry = PromptRegistry(store)
    registry.create("p1", "answer", {"prompt": "Answer: {{q}}"}, actor="test", labels=["production"])
    for text in ("Answer briefly: {{q}}", "Answer well: {{q}}"):
        registry.create("p1", "answer", {"prompt": text}, actor="test")
    registry.set_canary("p1", "answer", "production", canary_version, 0.5, actor="ops")
    return registry


def scored_traffic(store: SqlStore, version: int, passes: list[bool], *, score: str = "correct") -> None:
    """One traced gateway call per item (recording the prompt's version), each scored pass/fail."""
    start = time.time_ns() + 10**9  # after the canary began
    spans, scores = [], []
    for i, passed in enumerate(passes):
        trace = uuid.uuid4().hex
        spans.append(
            SpanRecord(
                "p1",
                Observation(
                    trace_id=trace,
                    id=uuid.uuid4().hex[:16],
                    name="chat",
                    start_ns=start + i,
                    end_ns=start + i + 10**6,
                    kind=ObservationKind.GENERATION,
                    status=Status.OK,
                    model="sim",
                    usage=Usage(input=10, output=2),
                    prompt_name="answer",
                    prompt_version=str(version),
                ),
                TraceAttributes(name="chat"),
            )
        )
        scores.append(
            make_score(trace_id=trace, name=score, value=passed, source="online", created_ns=start + i)
        )
    store.write_spans(spans)
    store.add_scores("p1", scores)


def draws(seed: int, rate: float, n: int) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < rate for _ in range(n)]


def test_a_regressing_canary_is_rolled_back_and_recorded(store: SqlStore) -> None:
    registry = _registry(store, canary_version=2)
    scored_traffic(store, 1, draws(1, 0.9, 150))
    scored_traffic(store, 2, draws(2, 0.5, 150))
    scored_traffic(store, 3, draws(3, 0.0, 60))  # another version's traces are no arm of this canary
    scored_traffic(store, 2, draws(4, 1.0, 60), score="politeness")  # another score decides nothing

    controller = CanaryController(store, registry, SETTINGS, holder="a")
    decided = controller.evaluate(time.time_ns())
    assert decided is not None and len(decided) == 1
    canary, result = decided[0]
    assert (canary.name, canary.version, canary.canary_version) == ("answer", 1, 2)
    assert result.verdict is GateVerdict.REGRESSION and result.upper < 0
    assert (result.control.n, result.canary.n) == (150, 150)
    assert registry.canary("p1", "answer", "production") is None  # ended: every user gets version 1
    assert registry.get("p1", "answer", label="production").version == 1
    event = registry.history("p1", "answer")[0]
    assert (event.action, event.version, event.previous, event.actor) == (
        "canary-rollback",
        2,
        1,
        CANARY_ACTOR,
    )
    assert event.detail["verdict"] == "regression" and event.detail["score"] == "correct"
    assert (
        event.detail["canary"]["n"] == 150
        and event.detail["canary"]["mean"] < event.detail["control"]["mean"]
    )
    status = canary_status(store, registry, SETTINGS, "p1", "answer", "production")
    assert status.canary is None and [e.action for e in status.decisions] == ["canary-rollback"]
    assert controller.evaluate(time.time_ns()) == []  # nothing runs any more


def test_a_good_canary_is_promoted(store: SqlStore) -> None:
    registry = _registry(store, canary_version=3)
    scored_traffic(store, 1, draws(5, 0.8, 150))
    scored_traffic(store, 3, draws(6, 1.0, 150))
    decided = CanaryController(store, registry, SETTINGS, holder="a").evaluate(time.time_ns())
    assert decided is not None and [r.verdict for _, r in decided] == [GateVerdict.PASS]
    assert decided[0][1].lower > -SETTINGS.margin
    assert registry.get("p1", "answer", label="production").version == 3
    assert registry.canary("p1", "answer", "production") is None
    event = registry.history("p1", "answer")[0]
    assert (event.action, event.version, event.previous) == ("canary-promote", 3, 1)
    assert event.detail["verdict"] == "pass" and event.detail["lower"] > -0.02


def test_an_aa_canary_keeps_running_until_there_is_evidence(store: SqlStore) -> None:
    registry = _registry(store, canary_version=2)
    scored_traffic(store, 1, draws(7, 0.9, 40))
    scored_traffic(store, 2, draws(8, 0.9, 40))
    controller = CanaryController(store, registry, SETTINGS, holder="a")
    assert controller.evaluate(time.time_ns()) == []  # fewer than min_samples traces per arm
    scored_traffic(store, 1, draws(9, 0.9, 100))
    scored_traffic(store, 2, draws(10, 0.9, 100))
    assert controller.evaluate(time.time_ns()) == []  # enough traces, not enough evidence either way
    status = canary_status(store, registry, SETTINGS, "p1", "answer", "production")
    assert status.canary is not None and status.canary.canary_version == 2
    assert status.result is not None and status.result.verdict is GateVerdict.INCONCLUSIVE
    assert (status.result.control.n, status.result.canary.n) == (140, 140)
    assert status.result.lower < -SETTINGS.margin and status.result.upper > 0
    assert status.decisions == [] and registry.history("p1", "answer")[0].action == "canary"
    # another process does not check while this one holds the job
    assert CanaryController(store, registry, SETTINGS, holder="b").evaluate(time.time_ns()) is None


def test_a_label_moved_by_a_person_is_left_alone(store: SqlStore) -> None:
    registry = _registry(store, canary_version=2)
    [running] = CanaryStore(store).running()
    registry.set_label("p1", "answer", "production", 3, actor="ops")  # ends the canary its own way
    assert not CanaryStore(store).end(running, promote=True, actor=CANARY_ACTOR, detail={})
    assert registry.get("p1", "answer", label="production").version == 3
    assert [e.action for e in registry.history("p1", "answer")[:2]] == ["label", "canary"]


def test_without_a_score_name_nothing_is_decided(store: SqlStore) -> None:
    registry = _registry(store, canary_version=2)
    scored_traffic(store, 1, draws(11, 0.9, 60))
    scored_traffic(store, 2, draws(12, 0.0, 60))
    assert CanaryController(store, registry, CanarySettings(), holder="a").evaluate(time.time_ns()) == []
    status = canary_status(store, registry, CanarySettings(), "p1", "answer", "production")
    assert status.canary is not None and status.result is None


def test_the_job_decides_in_the_background_and_gives_its_lease_up(store: SqlStore) -> None:
    registry = _registry(store, canary_version=2)
    heard: list[tuple[str, str]] = []
    registry.on_change(lambda project, name: heard.append((project, name)))  # what the watcher publishes
    scored_traffic(store, 1, draws(13, 0.9, 120))
    scored_traffic(store, 2, draws(14, 0.3, 120))

    async def scenario() -> int:
        controller = CanaryController(store, registry, SETTINGS, interval_s=0.01, holder="a")
        controller.start()
        for _ in range(1000):  # until the first pass has decided
            if controller.passes:
                break
            await asyncio.sleep(0.01)
        await controller.close()
        return controller.passes

    assert asyncio.run(scenario()) >= 1
    assert registry.canary("p1", "answer", "production") is None
    assert registry.history("p1", "answer")[0].action == "canary-rollback"
    assert heard == [("p1", "answer")]  # every gateway process is told the label's traffic changed
    assert MonitorStore(store).lease("canaries") is None  # given up at close: another process may start


def test_a_canary_started_with_its_own_score_and_margin_is_decided_by_them(store: SqlStore) -> None:
    registry = _registry(store, canary_version=2)
    registry.set_canary("p1", "answer", "production", 3, 0.2, actor="ops", score="polite", margin=0.25)
    scored_traffic(store, 1, draws(15, 0.9, 80), score="polite")
    scored_traffic(store, 3, draws(16, 0.8, 80), score="polite")  # worse, within the wide margin
    scored_traffic(store, 3, draws(17, 0.0, 80))  # the server's score would roll it back
    [running] = CanaryStore(store).running()
    assert (running.canary_version, running.share, running.score, running.margin) == (3, 0.2, "polite", 0.25)
    decided = CanaryController(store, registry, SETTINGS, holder="a").evaluate(time.time_ns())
    assert decided is not None and [r.verdict for _, r in decided] == [GateVerdict.PASS]
    event = registry.history("p1", "answer")[0]
    assert (event.action, event.detail["score"], event.detail["margin"]) == ("canary-promote", "polite", 0.25)
    with pytest.raises(PromptError, match="margin"):
        registry.set_canary("p1", "answer", "production", 2, 0.2, actor="ops", margin=float("nan"))
