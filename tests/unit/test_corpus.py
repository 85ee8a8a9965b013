"""The normaliser on payloads captured from the real instrumentation packages (tests/corpus).

The simulated upstream of the capture answered every chat call with usage prompt 20 (8 of them
cached), completion 12 (5 of them reasoning); every convention must come out as the same trace model,
each token counted once."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from pilothouse.domain.traces import Observation, ObservationKind, Status, Usage
from pilothouse.tracing.conventions import normalise_span
from pilothouse.tracing.otlp import decode_protobuf

PAYLOADS = Path(__file__).parents[1] / "corpus" / "payloads"
FULL = Usage(input=12, output=12, cache_read=8, reasoning=5)  # conventions that report the details
PLAIN = Usage(input=20, output=12)  # conventions that report only input and output
USAGE = {
    "openinference": FULL,
    "traceloop": FULL,
    "langfuse": FULL,
    "otel-genai": PLAIN,
    "otel-genai-latest": PLAIN,
    "otel-genai-v1": PLAIN,
}
WITH_CONTENT = {"openinference", "traceloop", "langfuse", "otel-genai-latest"}
WITH_TTFT = {"openinference", "langfuse", "traceloop"}
ANSWER = "Hello from the simulated upstream!"


def load(instrumentation: str, scenario: str) -> list[Observation]:
    """All observations of one scenario (some packages send one export request per span)."""
    files = sorted((PAYLOADS / instrumentation).glob(f"{scenario}*.pb"))
    files = [f for f in files if not f.name.endswith(".logs.pb") and f.stem.split("-")[0] == scenario]
    assert files, f"no payload for {instrumentation}/{scenario}"
    return [normalise_span(raw, "p").observation for f in files for raw in decode_protobuf(f.read_bytes())]


def model_calls(observations: list[Observation]) -> list[Observation]:
    return sorted((o for o in observations if o.kind.is_model_call), key=lambda o: o.start_ns)


def test_corpus_is_present_and_complete() -> None:
    by_instrumentation = defaultdict(set)
    for f in PAYLOADS.glob("*/*.pb"):
        by_instrumentation[f.parent.name].add(f.stem.split("-")[0].removesuffix(".logs"))
    assert set(USAGE) <= set(by_instrumentation)  # the later ones: test_corpus_matrix.py
    scenarios = {"chat", "chat_stream", "chat_tools", "embeddings", "error"}
    for instrumentation in USAGE:
        assert scenarios <= by_instrumentation[instrumentation]


@pytest.mark.parametrize("instrumentation", sorted(USAGE))
def test_chat(instrumentation: str) -> None:
    observations = load(instrumentation, "chat")
    (call,) = model_calls(observations)
    assert call.kind is ObservationKind.GENERATION
    assert call.model == "gpt-4o-mini-2024-07-18"
    assert call.usage == USAGE[instrumentation]
    assert call.usage.total == 32  # each token once, whatever the convention
    root = next(o for o in observations if o.parent_id is None)
    assert call.parent_id == root.id and call.trace_id == root.trace_id
    if instrumentation in WITH_CONTENT:
        assert call.output == ANSWER
        assert "You are a terse assistant." in (call.input or "")
    if instrumentation in ("openinference", "traceloop", "langfuse"):
        assert call.model_parameters.get("temperature") is not None or instrumentation == "traceloop"


@pytest.mark.parametrize("instrumentation", sorted(USAGE))
def test_chat_stream(instrumentation: str) -> None:
    (call,) = model_calls(load(instrumentation, "chat_stream"))
    expected = USAGE[instrumentation]
    if instrumentation == "traceloop":  # it drops the reasoning detail on streams
        expected = Usage(input=12, output=12, cache_read=8)
    assert call.usage == expected
    if instrumentation in WITH_CONTENT:
        assert call.output == ANSWER
    if instrumentation in WITH_TTFT:
        assert call.ttft_ns is not None and 0 < call.ttft_ns <= call.duration_ns


@pytest.mark.parametrize("instrumentation", sorted(USAGE))
def test_tool_calls(instrumentation: str) -> None:
    first, second = model_calls(load(instrumentation, "chat_tools"))
    if instrumentation in WITH_CONTENT:
        assert "get_weather" in (first.output or "")
        assert second.output == "It is 18 degrees Celsius and sunny in Paris."
        assert "What is the weather in Paris?" in (second.input or "")


@pytest.mark.parametrize("instrumentation", sorted(set(USAGE) - {"otel-genai-v1"}))  # v1 has no embeddings
def test_embeddings(instrumentation: str) -> None:
    (call,) = model_calls(load(instrumentation, "embeddings"))
    assert call.kind is ObservationKind.EMBEDDING
    assert call.model == "text-embedding-3-small"
    assert call.usage.input == 6 and call.usage.output == 0


@pytest.mark.parametrize("instrumentation", sorted(USAGE))
def test_errors(instrumentation: str) -> None:
    observations = load(instrumentation, "error")
    failed = [o for o in observations if o.status is Status.ERROR]
    assert len(failed) == 1 and failed[0].kind is ObservationKind.GENERATION
    assert failed[0].status_message
