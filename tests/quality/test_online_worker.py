"""The online evaluators' worker over real stores (SQLite and PostgreSQL): traces picked by rules into
the persisted queue, scored once per evaluator version, retried then unmeasured, resumed after a
restart, shared by two workers without double scoring, judged by a priced model under a daily cap."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pilothouse.domain.chat import ChatModel
from pilothouse.domain.traces import ScoreSource
from pilothouse.evals.scoring import (
    BaseScorer,
    Sample,
    ScoreResult,
    ScoringError,
    register_scorer,
)
from pilothouse.quality.online import OnlineEvaluators, OnlineWorker, WorkerOptions
from pilothouse.store.online import Outcome
from pilothouse.store.sql import SqlStore
from tests.conftest import _clean
from tests.quality.online_traces import store_trace

pytestmark = pytest.mark.slow  # real databases and many cycles: over 0.3 s each on PostgreSQL

FAST = WorkerOptions(poll_s=0.0, settle_s=0.0, lease_s=30.0, max_attempts=3, concurrency=8, retry_base_s=0.0)
CONTAINS_PARIS = {"scorer": {"type": "contains", "value": "Paris"}, "sampling": 1.0}


@register_scorer("test-always-fails", replace=True)
class AlwaysFails(BaseScorer):
    """A user plugin scorer whose every attempt fails (a flaky dependency that never recovers)."""

    async def measure(self, sample: Sample) -> ScoreResult:
        raise ScoringError("the dependency is down")


@register_scorer("test-unsure", replace=True)
class Unsure(BaseScorer):
    """A user plugin detector that is never sure, and points at the answer's first word."""

    default_threshold = 0.5

    async def measure(self, sample: Sample) -> ScoreResult:
        return ScoreResult(0.55, details={"spans": [{"start": 0, "end": 5, "text": sample.output[:5]}]})


def no_judges(_name: str) -> ChatModel | None:
    return None


async def drain(*workers: OnlineWorker, rounds: int = 200) -> None:
    """Run the workers' cycles until none has work left (a bounded number of rounds)."""
    for _ in range(rounds):
        busy = await asyncio.gather(*(w.run_once() for w in workers))
        if not any(busy) and all(w.stats.backlog == 0 for w in workers):
            return
    raise AssertionError("the workers did not drain their work")


def online_scores(store: SqlStore, trace_id: str, project: str = "default") -> list[Any]:
    detail = store.get_trace(project, trace_id)
    assert detail is not None
    return [s for s in detail.scores if s.source is ScoreSource.ONLINE]


def test_a_model_filter_finds_calls_by_the_name_asked_for_or_served(store: SqlStore) -> None:
    service = OnlineEvaluators(store)
    service.create("default", "asked", {**CONTAINS_PARIS, "filters": {"model": ["echo"]}})
    service.create("default", "served", {**CONTAINS_PARIS, "filters": {"model": ["echo-1"]}})
    aliased = store_trace(store, model="echo-1", request_model="echo")  # the gateway's alias
    other = store_trace(store, model="gpt-4o-mini")
    asyncio.run(drain(OnlineWorker(service, no_judges, FAST)))
    assert sorted(s.name for s in online_scores(store, aliased)) == ["asked", "served"]
    assert online_scores(store, other) == []


def test_review_rules_send_failed_uncertain_and_disputed_traces_to_people(store: SqlStore) -> None:
    from pilothouse.quality.review import ReviewService

    service = OnlineEvaluators(store)
    service.create("default", "paris", CONTAINS_PARIS)
    lyon = {"type": "contains", "value": "Lyon"}
    failed = {"queue": "failures"}
    disputed = {"queue": "disputes", "when": "disagrees", "with": "paris"}
    service.create("default", "lyon", {"scorer": lyon, "review": failed})
    service.create("default", "lyon-vs-paris", {"scorer": lyon, "review": disputed})
    unsure = {"queue": "unsure", "when": "uncertain", "band": 0.1}
    service.create("default", "unsure", {"scorer": {"type": "test-unsure"}, "review": unsure})
    paris = store_trace(store, output="Paris is the capital.")
    both = store_trace(store, output="Paris, not Lyon.")
    worker = OnlineWorker(service, no_judges, FAST)
    asyncio.run(drain(worker))

    review = ReviewService(store)
    queued = {
        queue.name: sorted(
            (i.trace_id, i.reason, i.source, tuple(i.spans)) for i in review.store.list_items(queue)
        )
        for queue, _counts in review.queues("default")
    }
    assert queued["failures"] == [(paris, "failed (0.00)", "online", ())]
    assert queued["disputes"] == [(paris, "disagrees with paris (0.00 vs 1.00)", "online", ())]
    assert sorted(queued["unsure"]) == sorted(
        [(t, "uncertain (0.55, threshold 0.50)", "online", ((0, 5),)) for t in (paris, both)]
    )
    assert worker.stats.sent_to_review == 4
    asyncio.run(drain(worker))  # nothing is sent twice
    assert worker.stats.sent_to_review == 4


def test_rules_pick_live_traces_and_each_is_scored_once(store: SqlStore) -> None:
    service = OnlineEvaluators(store)
    old = store_trace(store, tags=("prod",))  # stored before the evaluator: only a backfill takes it
    service.create("default", "mentions-paris", {**CONTAINS_PARIS, "filters": {"tags": ["prod"]}})
    picked = [store_trace(store, tags=("prod",)), store_trace(store, tags=("prod", "eu"), output="Lyon.")]
    ignored = [store_trace(store, tags=("dev",)), store_trace(store, project="other", tags=("prod",))]
    worker = OnlineWorker(service, no_judges, FAST)

    asyncio.run(drain(worker))
    asyncio.run(drain(worker))  # a second pass finds nothing new

    assert [[(s.name, s.value) for s in online_scores(store, t)] for t in picked] == [
        [("mentions-paris", 1.0)],
        [("mentions-paris", 0.0)],
    ]
    assert online_scores(store, picked[0])[0].comment.startswith("mentions-paris v1")
    assert online_scores(store, ignored[0]) == [] and online_scores(store, old) == []
    assert online_scores(store, ignored[1], "other") == []
    (status,) = service.statuses("default")
    assert status.counts == {"scored": 2} and worker.stats.scored == 2

    # a backfill over the past takes the older trace; the two already scored are not queued again
    result = service.backfill("default", "mentions-paris", 0, time.time_ns() + 10**9)
    assert result is not None and (result.traces, result.queued) == (4, 1)  # dev is not picked
    asyncio.run(drain(worker))
    assert [s.value for s in online_scores(store, old)] == [1.0]


def test_an_edit_is_a_new_version_that_scores_again(store: SqlStore) -> None:
    service = OnlineEvaluators(store)
    service.create("default", "polite", CONTAINS_PARIS)
    trace = store_trace(store)
    worker = OnlineWorker(service, no_judges, FAST)
    asyncio.run(drain(worker))
    same = service.update("default", "polite", CONTAINS_PARIS, enabled=None)
    assert same is not None and same.version == 1  # the same rules: no new version
    edited = service.update(
        "default", "polite", {**CONTAINS_PARIS, "scorer": {"type": "contains", "value": "Rome"}}, None
    )
    assert edited is not None and edited.version == 2
    service.backfill("default", "polite", 0, time.time_ns() + 10**9)
    asyncio.run(drain(worker))
    scores = sorted((s.comment or "", s.value) for s in online_scores(store, trace))
    assert [(c.split(":")[0], v) for c, v in scores] == [("polite v1", 1.0), ("polite v2", 0.0)]


def test_a_paused_evaluator_resumes_from_now(store: SqlStore) -> None:
    service = OnlineEvaluators(store)
    service.create("default", "paris", CONTAINS_PARIS, enabled=False)
    while_paused = store_trace(store)
    resumed = service.update("default", "paris", None, enabled=True)
    assert resumed is not None and resumed.version == 1
    after = store_trace(store)
    asyncio.run(drain(OnlineWorker(service, no_judges, FAST)))
    assert online_scores(store, while_paused) == [] and len(online_scores(store, after)) == 1


def test_failures_are_retried_then_unmeasured_with_the_reason(store: SqlStore) -> None:
    service = OnlineEvaluators(store)
    service.create("default", "flaky", {"scorer": {"type": "test-always-fails"}})
    trace = store_trace(store)
    worker = OnlineWorker(service, no_judges, FAST)
    asyncio.run(drain(worker))
    (item,) = service.online.items_for_trace("default", trace)
    assert (item.state, item.attempts, item.reason) == ("unmeasured", 3, "the dependency is down")
    assert worker.stats.retried == 2 and online_scores(store, trace) == []


def test_persisted_work_resumes_after_a_restart_and_an_expired_lease(store: SqlStore) -> None:
    service = OnlineEvaluators(store)
    service.create("default", "paris", CONTAINS_PARIS)
    traces = [store_trace(store) for _ in range(6)]
    assert service.poll(service.online.max_trace_pk(), time.time_ns()) == 6  # queued, then the process stops
    # the first process claims half of it and dies: its lease holds the items until it expires
    held = service.online.claim("first", 3, time.time_ns(), 30 * 10**9)
    assert len(held) == 3

    later = time.time_ns() + 31 * 10**9  # the second process starts after the lease ran out
    restarted = OnlineWorker(OnlineEvaluators(store), no_judges, FAST, owner="second", clock=lambda: later)
    asyncio.run(drain(restarted))
    assert all(len(online_scores(store, t)) == 1 for t in traces)
    assert restarted.stats.scored == 6
    # the dead worker's late answer changes nothing: its lease is gone
    assert service.online.complete("first", [Outcome(held[0], "unmeasured", reason="late")]) == 0


def test_two_workers_share_the_work_without_double_scoring(pg_server: str) -> None:
    stores = [SqlStore.from_url(pg_server) for _ in range(2)]
    _clean(stores[0])
    try:
        service = OnlineEvaluators(stores[0])
        service.create("default", "shared", CONTAINS_PARIS)
        traces = [store_trace(stores[0]) for _ in range(120)]
        workers = [
            OnlineWorker(
                OnlineEvaluators(s),
                no_judges,
                WorkerOptions(poll_s=0.0, settle_s=0, concurrency=4, batch=10),
                owner=f"w{n}",
            )
            for n, s in enumerate(stores)
        ]
        asyncio.run(drain(*workers, rounds=400))
        assert sorted(len(online_scores(stores[0], t)) for t in traces) == [1] * 120
        assert sum(w.stats.scored for w in workers) == 120
        assert all(w.stats.scored > 0 for w in workers)  # both took a share
        assert sum(w.stats.lost_leases for w in workers) == 0
    finally:
        for s in stores:
            s.close()


def judge_config(tmp_path: Path) -> Path:
    knowledge = tmp_path / "verdicts.jsonl"
    knowledge.write_text(
        '{"question": "zebra-42", "answer": "Score: 4", "difficulty": 0}\n'
        '{"question": "okapi-7", "answer": "Hard to say, really.", "difficulty": 0}\n'
    )
    path = tmp_path / "models.yaml"
    sim = {"knowledge": str(knowledge)}
    price = {"input": 1000.0, "output": 1000.0}  # USD per 1M tokens: a judge call costs cents
    path.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"name": "judge", "provider": "sim", "model": "sim-judge", "options": sim, "price": price}
                ],
                "router": {"retries": 0},
            }
        )
    )
    return path


def test_a_judge_scores_in_its_own_priced_trace_under_a_daily_cap(store: SqlStore, tmp_path: Path) -> None:
    from pilothouse.config import load_config
    from pilothouse.costs.catalogue import PriceCatalogue
    from pilothouse.costs.pricing import Pricer
    from pilothouse.gateway import Gateway, InProcessModel
    from pilothouse.gateway.config import GatewayConfig
    from pilothouse.gateway.router import Router

    config = GatewayConfig.from_config(load_config(judge_config(tmp_path), home=tmp_path))
    gateway = Gateway(Router(config), Pricer(PriceCatalogue.packaged(config.prices)))
    gateway.record = lambda span: store.write_spans([span])
    service = OnlineEvaluators(store, served_models=["judge"])
    rubric = {"type": "rubric", "criteria": "Is the answer correct?", "logprobs": False}
    service.create("default", "correct", {"scorer": rubric, "judge": "judge", "daily_cost_cap_usd": 0.0001})
    first = store_trace(store, output="zebra-42 is the answer")
    options = WorkerOptions(poll_s=0.0, settle_s=0, concurrency=1, retry_base_s=0.0)

    def judges(name: str) -> ChatModel | None:
        return InProcessModel(gateway, name, description="the server's gateway") if name == "judge" else None

    worker = OnlineWorker(service, judges, options)
    asyncio.run(drain(worker))
    (score,) = online_scores(store, first)
    assert score.value == pytest.approx(0.75)  # 4 on 1-5
    (item,) = service.online.items_for_trace("default", first)
    assert item.cost_usd is not None and item.cost_usd > 0.0001  # priced, and past the cap
    judge_traces = [t for t in service.online.live_traces(0, 10**12, 100) if t.name == "online-eval correct"]
    assert len(judge_traces) == 1 and judge_traces[0].metadata["scored_trace"] == first
    assert score.comment.startswith(f"correct v1 (judge trace {judge_traces[0].id})")  # the link to it

    second = store_trace(store, output="zebra-42 again")
    asyncio.run(drain(worker))
    (capped,) = service.online.items_for_trace("default", second)
    assert (capped.state, capped.reason) == ("unmeasured", "daily cost cap")
    assert online_scores(store, second) == []


def test_an_unreadable_verdict_is_not_paid_for_twice(store: SqlStore, tmp_path: Path) -> None:
    from pilothouse.config import load_config
    from pilothouse.costs.catalogue import PriceCatalogue
    from pilothouse.costs.pricing import Pricer
    from pilothouse.gateway import Gateway, InProcessModel
    from pilothouse.gateway.config import GatewayConfig
    from pilothouse.gateway.router import Router

    config = GatewayConfig.from_config(load_config(judge_config(tmp_path), home=tmp_path))
    gateway = Gateway(Router(config), Pricer(PriceCatalogue.packaged(config.prices)))
    gateway.record = lambda span: store.write_spans([span])
    service = OnlineEvaluators(store, served_models=["judge"])
    rubric = {"type": "rubric", "criteria": "Is the answer correct?", "logprobs": False}
    service.create("default", "correct", {"scorer": rubric, "judge": "judge"})
    unreadable = store_trace(store, output="okapi-7 is the answer")  # the judge answers with no score
    options = WorkerOptions(poll_s=0.0, settle_s=0, concurrency=1, retry_base_s=0.0, max_attempts=3)
    judges = {"judge": InProcessModel(gateway, "judge", description="the server's gateway")}
    asyncio.run(drain(OnlineWorker(service, judges.get, options)))
    (item,) = service.online.items_for_trace("default", unreadable)
    assert item.state == "unmeasured" and (item.reason or "").startswith("could not find a score")
    # asked once: at temperature 0, asking again gives the same answer at the same price
    judge_traces = [t for t in service.online.live_traces(0, 10**12, 100) if t.name == "online-eval correct"]
    assert len(judge_traces) == 1


def test_the_watchdog_reports_a_silent_worker(sqlite_store: SqlStore) -> None:
    now = [time.time_ns()]
    worker = OnlineWorker(
        OnlineEvaluators(sqlite_store), no_judges, WorkerOptions(settle_s=0, stall_s=60), clock=lambda: now[0]
    )
    asyncio.run(worker.run_once())
    assert worker.health()["stalled"] is False and worker.health()["reasons"] == []
    now[0] += 61 * 10**9  # a minute on without a cycle: a hung database call, a blocked loop
    health = worker.health()
    assert health["stalled"] is True
    assert health["reasons"] == ["the online evaluators' worker made no progress for 61s"]


def test_a_hallucination_evaluator_escalates_to_its_judge_then_goes_on_locally_past_the_cap(
    store: SqlStore, tmp_path: Path
) -> None:
    from pilothouse.config import load_config
    from pilothouse.costs.catalogue import PriceCatalogue
    from pilothouse.costs.pricing import Pricer
    from pilothouse.gateway import Gateway, InProcessModel
    from pilothouse.gateway.config import GatewayConfig
    from pilothouse.gateway.router import Router
    from pilothouse.quality.online import RuleError

    path = judge_config(tmp_path)  # its judge knows "zebra-42": that answer is unsupported
    (tmp_path / "verdicts.jsonl").write_text(
        '{"question": "zebra-42", "answer": "{\\"supported\\": false, \\"unsupported\\": [\\"zebra-42\\"]}",'
        ' "difficulty": 0}\n'
    )
    config = GatewayConfig.from_config(load_config(path, home=tmp_path))
    gateway = Gateway(Router(config), Pricer(PriceCatalogue.packaged(config.prices)))
    gateway.record = lambda span: store.write_spans([span])
    service = OnlineEvaluators(store, served_models=["judge"])
    with pytest.raises(RuleError, match="only for scorers that call a model"):
        service.create("default", "x", {"scorer": {"type": "contains", "value": "a"}, "judge": "judge"})
    with pytest.raises(RuleError, match="goes beside 'scorer'"):
        service.create("default", "x", {"scorer": {"type": "hallucination", "judge": "judge"}})
    scorer = {"type": "hallucination", "escalate": 1.0}  # every check to the judge (until the cap)
    service.create("default", "faithful", {"scorer": scorer, "judge": "judge", "daily_cost_cap_usd": 0.0001})
    context = {"context": "The zebra-41 run finished first."}
    first = store_trace(store, output="zebra-42 finished first.", metadata=context)
    judges = {"judge": InProcessModel(gateway, "judge", description="the server's gateway")}
    worker = OnlineWorker(service, judges.get, WorkerOptions(poll_s=0.0, settle_s=0, retry_base_s=0.0))
    asyncio.run(drain(worker))
    (judged,) = online_scores(store, first)
    assert judged.value == 0.0 and "the judge says unsupported" in (judged.comment or "")
    assert "(judge trace " in (judged.comment or "")  # the link to the judge's own trace
    (item,) = service.online.items_for_trace("default", first)
    assert item.cost_usd is not None and item.cost_usd > 0.0001  # the judge's price, past the cap

    bare = store_trace(store, output="zebra-41 finished first.")  # no context: nothing to check against
    asyncio.run(drain(worker))
    (missing,) = service.online.items_for_trace("default", bare)
    assert (missing.state, missing.attempts) == ("unmeasured", 1) and "needs a context" in (
        missing.reason or ""
    )

    second = store_trace(store, output="zebra-41 finished first.", metadata=context)
    asyncio.run(drain(worker))
    (local,) = online_scores(store, second)  # the cap stops the judge, not the local detector
    assert local.value is not None and 0.0 < local.value < 1.0 and "escalated" not in (local.comment or "")
    assert "daily cost cap reached" in (local.comment or "") and "judge trace" not in (local.comment or "")
    (capped,) = service.online.items_for_trace("default", second)
    assert capped.state == "scored" and not capped.cost_usd
