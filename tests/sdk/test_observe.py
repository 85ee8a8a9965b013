"""@observe and span(): sync, async, generators, errors, nesting, trace-level facts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest

import pilothouse
from pilothouse.domain.traces import ObservationKind, Status
from pilothouse.testing import InMemoryExporter
from tests.sdk.conftest import observations


def test_sync_function_nesting_and_io(exporter: InMemoryExporter) -> None:
    @pilothouse.observe(kind="retrieval")
    def retrieve(query: str, k: int = 2) -> list[str]:
        return [f"doc about {query}"] * k

    @pilothouse.observe(name="answer")
    def answer(question: str) -> str:
        pilothouse.update_current_trace(user_id="u1", session_id="s1", tags=["beta"])
        docs = retrieve(question)
        return f"{len(docs)} docs"

    assert answer("tides") == "2 docs"
    obs = {o.name: o for o in observations(exporter)}
    root, child = obs["answer"], obs["test_sync_function_nesting_and_io.<locals>.retrieve"]
    assert child.parent_id == root.id and child.trace_id == root.trace_id
    assert child.kind is ObservationKind.RETRIEVAL
    assert json.loads(child.input or "") == {"query": "tides", "k": 2}
    assert json.loads(child.output or "") == ["doc about tides", "doc about tides"]
    assert root.output == "2 docs"


def test_arguments_named_like_a_secret_are_recorded_redacted(exporter: InMemoryExporter) -> None:
    """A traced function's ``api_key`` or ``headers`` argument is recorded as ``<redacted>`` (the
    function itself gets the real value), in a plain signature and under ``**kwargs``."""
    seen = []

    @pilothouse.observe()
    def call(prompt: str, api_key: str, headers: dict[str, str] | None = None) -> str:
        seen.append((api_key, headers))
        return "ok"

    @pilothouse.observe()
    def call_any(prompt: str, *args: str, **options: str) -> str:
        seen.append(options["access_token"])
        return "ok"

    call("hi", "sk-real-key", headers={"Authorization": "Bearer x"})
    call_any("hi", "more", access_token="tok-real", temperature="0.2")
    assert seen == [("sk-real-key", {"Authorization": "Bearer x"}), "tok-real"]
    recorded = {o.name.rsplit(".", 1)[-1]: json.loads(o.input or "") for o in observations(exporter)}
    assert recorded["call"] == {"prompt": "hi", "api_key": "<redacted>", "headers": "<redacted>"}
    assert recorded["call_any"] == {
        "prompt": "hi",
        "args": ["more"],
        "options": {"access_token": "<redacted>", "temperature": "0.2"},
    }


def test_async_and_errors(exporter: InMemoryExporter) -> None:
    @pilothouse.observe
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    @pilothouse.observe
    async def outer() -> str:
        try:
            await fails()
        except ValueError:
            return "recovered"
        return "no"

    assert asyncio.run(outer()) == "recovered"
    obs = {o.name.rsplit(".", 1)[-1]: o for o in observations(exporter)}
    assert obs["fails"].status is Status.ERROR and "boom" in (obs["fails"].status_message or "")
    assert obs["fails"].parent_id == obs["outer"].id
    assert obs["outer"].status is not Status.ERROR


def test_generators_keep_the_span_open_and_collect_output(exporter: InMemoryExporter) -> None:
    @pilothouse.observe
    def words() -> Iterator[str]:
        with pilothouse.span("inner"):
            pass
        yield "a"
        yield "b"

    @pilothouse.observe
    async def awords() -> AsyncIterator[str]:
        yield "x"
        yield "y"

    async def consume() -> list[str]:
        return [w async for w in awords()]

    assert list(words()) == ["a", "b"]
    assert asyncio.run(consume()) == ["x", "y"]
    obs = {o.name.rsplit(".", 1)[-1]: o for o in observations(exporter)}
    assert obs["words"].output == "ab" and obs["awords"].output == "xy"
    assert obs["inner"].parent_id == obs["words"].id


def test_span_context_manager_with_usage_and_score_validation(exporter: InMemoryExporter) -> None:
    with pilothouse.span("llm-call", kind="generation", input={"q": 1}) as s:
        s.update(output="hi", model="my-model", usage={"input": 10, "output": 3, "cache_read": 4})
        with pytest.raises(ValueError):
            pilothouse.score("quality", "not-a-number", data_type="numeric")
        with pytest.raises(ValueError):
            s.update(usage={"prompt": 1})
    (obs,) = observations(exporter)
    assert obs.kind is ObservationKind.GENERATION and obs.model == "my-model"
    assert (obs.usage.input, obs.usage.cache_read, obs.usage.output) == (6, 4, 3)
    with pytest.raises(ValueError):
        pilothouse.span("x", kind="nonsense").__enter__()


def test_sdk_trace_ids_begin_with_the_time(exporter: InMemoryExporter) -> None:
    before = time.time_ns() // 1_000_000
    with pilothouse.span("timed"):
        pass
    (span,) = exporter.spans
    assert before <= span.context.trace_id >> 80 <= time.time_ns() // 1_000_000
