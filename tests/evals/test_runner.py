"""The runner against the simulated model, in-process and over HTTP through the real openai client:
results, tracing, concurrency, 429 back-off, unmeasured errors, the response cache, resuming."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pilothouse.domain.evals import RunStatus
from pilothouse.evals.runner import AdaptiveLimit, run_eval
from pilothouse.evals.spec import EvalSpec, parse_spec
from pilothouse.store.evals import EvalStore
from pilothouse.testing import SimConfig, SimulatedUpstream
from tests.evals.conftest import explain_spec, topic_items


def run(spec_data: dict[str, Any], store: EvalStore, tmp_path: Path, **kwargs: Any) -> Any:
    spec = parse_spec(spec_data, base_dir=tmp_path)
    return asyncio.run(run_eval(spec, store, **kwargs))


def http_target(upstream: SimulatedUpstream, prompt: str = "Explain {{topic}} briefly.") -> dict[str, Any]:
    return {
        "model": "sim",
        "base_url": upstream.base_url + "/v1",
        "api_key": "not-needed",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}],
    }


def test_in_process_run_is_scored_and_traced(tmp_path: Path, eval_store: EvalStore) -> None:
    result = run(explain_spec(tmp_path, 8, repeats=2), eval_store, tmp_path)
    assert result.status is RunStatus.COMPLETED
    summary = result.summary
    assert (summary.results, summary.errors) == (16, 0)
    assert summary.metric("contains").mean == 1.0
    assert summary.input_tokens == 16 * 3 and summary.unpriced == 16  # sim-1 has no price: unknown, not $0
    results = list(eval_store.iter_results(result.id))
    assert [(r.position, r.epoch) for r in results][:4] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert results[0].output == "Explain tides briefly."
    trace = eval_store.store.get_trace("default", results[0].trace_id)
    assert trace is not None
    [generation] = trace.observations
    assert generation.kind.value == "generation" and generation.model == "sim-1"
    assert generation.attributes["eval.run_id"] == result.id
    assert generation.attributes["eval.item_id"] == results[0].item_id
    assert generation.attributes["eval.role"] == "target"
    assert generation.usage.input == 3


def test_a_worse_prompt_scores_worse(tmp_path: Path, eval_store: EvalStore) -> None:
    worse = run(explain_spec(tmp_path, 8, prompt="Explain this briefly."), eval_store, tmp_path)
    assert worse.summary.metric("contains").mean == 0.0


def test_openai_compatible_endpoint_gets_a_traceparent(
    tmp_path: Path, eval_store: EvalStore, echo_upstream: SimulatedUpstream
) -> None:
    before = len(echo_upstream.requests)
    result = run(explain_spec(tmp_path, 4, target=http_target(echo_upstream)), eval_store, tmp_path)
    assert result.summary.metric("contains").mean == 1.0
    headers = echo_upstream.request_headers[before:]
    trace_ids = {h["traceparent"].split("-")[1] for h in headers}
    stored = {r.trace_id for r in eval_store.iter_results(result.id)}
    assert len(headers) == 4 and trace_ids == stored


def test_concurrency_is_bounded(tmp_path: Path, eval_store: EvalStore) -> None:
    with SimulatedUpstream(SimConfig(echo=True, latency_ms=40)) as upstream:
        spec = explain_spec(tmp_path, 30, target=http_target(upstream), concurrency=5)
        result = run(spec, eval_store, tmp_path)
    assert result.summary.errors == 0
    assert 3 <= upstream.peak_in_flight <= 5  # calls overlapped, never more than 5 at a time


def test_rate_limits_slow_the_runner_down(tmp_path: Path, eval_store: EvalStore) -> None:
    config = SimConfig(echo=True, latency_ms=20, max_concurrency=3, retry_after_s=0.02)
    progress: list[Any] = []
    with SimulatedUpstream(config) as upstream:
        spec = explain_spec(tmp_path, 60, target=http_target(upstream), concurrency=24, retries=20)
        result = run(
            spec, eval_store, tmp_path, on_progress=lambda p, _r: progress.append((p.rate_limited, p.limit))
        )
    assert upstream.rate_limited > 0  # the upstream pushed back ...
    assert result.summary.errors == 0 and result.summary.metric("contains").measured == 60  # ... nothing lost
    assert min(limit for _, limit in progress) <= 3  # the runner slowed down to what the upstream takes
    assert progress[-1][0] == upstream.rate_limited


async def test_adaptive_limit_halves_once_per_window_and_recovers() -> None:
    limit = AdaptiveLimit(8)
    old = await limit.acquire()
    limit.rate_limited(old)
    limit.rate_limited(old)  # another call of the same window: halved once
    assert limit.limit == 4
    new = await limit.acquire()
    limit.rate_limited(new)
    assert limit.limit == 2
    limit.release()
    limit.release()
    for _ in range(2 + 3):
        limit.succeeded()
    assert limit.limit == 4 and limit.in_use == 0


def fail_some(variables: dict[str, Any]) -> str:
    if variables["topic"] in ("gravity", "magnets"):
        raise ValueError(f"cannot explain {variables['topic']}")
    return f"All about {variables['topic']}"


async def slow_for_comets(variables: dict[str, Any]) -> str:
    if variables["topic"] == "comets":
        await asyncio.sleep(5)
    return variables["topic"]


def test_errors_and_timeouts_are_unmeasured_not_failures(tmp_path: Path, eval_store: EvalStore) -> None:
    spec = explain_spec(tmp_path, 8, target={"callable": f"{__name__}:fail_some"})
    result = run(spec, eval_store, tmp_path)
    metric = result.summary.metric("contains")
    assert (result.summary.results, result.summary.errors) == (8, 2)
    assert (metric.measured, metric.unmeasured, metric.mean) == (6, 2, 1.0)  # not 6/8
    failed = [r for r in eval_store.iter_results(result.id) if r.error]
    assert {r.item_id for r in failed} == {"2", "6"}
    assert all(s.value is None and "cannot explain" in (s.error or "") for r in failed for s in r.scores)
    by_item, unmeasured, unmeasured_items = eval_store.metric_values(result.id, "contains")
    assert len(by_item) == 6 and unmeasured == 2 and unmeasured_items == {"2", "6"}

    spec = explain_spec(
        tmp_path, 8, target={"callable": f"{__name__}:slow_for_comets"}, timeout_s=0.2, retries=0
    )
    result = run(spec, eval_store, tmp_path)
    [timed_out] = [r for r in eval_store.iter_results(result.id) if r.error]
    assert timed_out.item_id == "7" and "timed out after 0.2 s" in (timed_out.error or "")


def test_unparseable_judgements_are_unmeasured_with_judge_tokens_apart(
    tmp_path: Path, eval_store: EvalStore
) -> None:
    spec = explain_spec(tmp_path, 3)
    spec["judge"] = {"model": "sim", "config": spec["target"]["config"], "logprobs": False}
    spec["scorers"].append({"type": "rubric", "criteria": "Is it a good explanation?"})
    result = run(spec, eval_store, tmp_path)  # the echoing judge repeats the prompt: no score in it
    rubric = result.summary.metric("rubric")
    assert (rubric.measured, rubric.unmeasured) == (0, 3)
    assert result.summary.metric("contains").mean == 1.0
    assert result.summary.judge_input_tokens > 3 * 50 and result.summary.input_tokens == 9
    first = next(eval_store.iter_results(result.id))
    assert first.score("rubric").error and first.judge_input_tokens and first.input_tokens == 3
    roles = Counter(
        o.attributes["eval.role"] for o in eval_store.store.get_trace("default", first.trace_id).observations
    )
    assert roles == {"target": 1, "judge": 1}  # both calls in the item's trace


def test_a_rerun_is_served_from_the_cache(
    tmp_path: Path, eval_store: EvalStore, echo_upstream: SimulatedUpstream
) -> None:
    spec = explain_spec(tmp_path, 5, target=http_target(echo_upstream, "Tell me about {{topic}}."), repeats=2)
    before = len(echo_upstream.requests)
    first = run(spec, eval_store, tmp_path)
    assert len(echo_upstream.requests) - before == 10  # each epoch its own call
    second = run(spec, eval_store, tmp_path)
    assert len(echo_upstream.requests) - before == 10  # no call at all the second time
    assert second.summary.cached == 10 and second.summary.metric("contains").mean == 1.0
    assert second.id != first.id
    third = run({**spec, "cache": False}, eval_store, tmp_path)
    assert len(echo_upstream.requests) - before == 20 and third.summary.cached == 0


CALLS: list[str] = []
INTERRUPT = {"after": 15}


async def interrupt_after_15(variables: dict[str, Any]) -> str:
    if len(CALLS) == INTERRUPT["after"]:
        INTERRUPT["after"] = -1  # once (Ctrl-C)
        raise KeyboardInterrupt
    CALLS.append(variables["topic"])
    await asyncio.sleep(0.001)
    return variables["topic"]


def test_an_interrupted_run_resumes_without_running_anything_twice(
    tmp_path: Path, eval_store: EvalStore
) -> None:
    CALLS.clear()
    INTERRUPT["after"] = 15
    data = explain_spec(tmp_path, 40, target={"callable": f"{__name__}:interrupt_after_15"}, concurrency=4)
    spec = parse_spec(data, base_dir=tmp_path)
    runs: list[Any] = []
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run_eval(spec, eval_store, on_start=runs.append))
    run_id = runs[0].id
    interrupted = eval_store.get_run(run_id)
    assert interrupted.status is RunStatus.INTERRUPTED
    stored_before = {r.item_id for r in eval_store.iter_results(run_id)}
    assert 10 <= len(stored_before) <= 15  # what finished was kept (the calls in flight were not)
    calls_before = len(CALLS)
    resumed = asyncio.run(run_eval(spec, eval_store, resume=run_id))
    assert resumed.id == run_id and resumed.status is RunStatus.COMPLETED
    results = list(eval_store.iter_results(run_id))
    assert len(results) == 40 and len({r.item_id for r in results}) == 40
    topics_after = CALLS[calls_before:]
    topic_of = {str(n + 1): t["topic"] for n, t in enumerate(topic_items(40))}
    assert not {topic_of[i] for i in stored_before} & set(topics_after)  # nothing ran twice
    assert resumed.summary.results == 40 and resumed.summary.metric("contains").mean == 1.0


def test_python_spec_with_inline_items(eval_store: EvalStore) -> None:
    spec = EvalSpec.create(
        dataset=[{"topic": t} for t in ("tides", "comets")],
        target=lambda v: f"about {v['topic']}",
        scorers=[{"type": "contains", "value": "{{topic}}"}],
        name="inline-check",
    )
    result = asyncio.run(run_eval(spec, eval_store))
    assert result.dataset == "inline-check" and result.summary.metric("contains").mean == 1.0


def test_the_response_cache_is_per_project(
    tmp_path: Path, eval_store: EvalStore, echo_upstream: SimulatedUpstream
) -> None:
    """Issue 21 class 13: one project's run never reads another project's cached answers."""
    spec = explain_spec(tmp_path, 3, target=http_target(echo_upstream, "Cache me {{topic}}."), project="p1")
    before = len(echo_upstream.requests)
    run(spec, eval_store, tmp_path)
    other = run({**spec, "project": "p2"}, eval_store, tmp_path)
    assert other.summary.cached == 0 and len(echo_upstream.requests) - before == 6
    again = run(spec, eval_store, tmp_path)
    assert again.summary.cached == 3 and len(echo_upstream.requests) - before == 6
