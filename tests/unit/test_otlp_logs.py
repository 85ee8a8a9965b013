"""GenAI log events (OTLP logs) as events of their span, on the corpus' real log exports."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilothouse.domain.traces import ObservationKind
from pilothouse.tracing.conventions import normalise_span
from pilothouse.tracing.otlp import (
    DEFAULT_LIMITS,
    DecodeLimits,
    OtlpDecodeError,
    OtlpTooLarge,
    decode_protobuf,
)
from pilothouse.tracing.otlp_logs import decode_logs

PAYLOADS = Path(__file__).parents[1] / "corpus" / "payloads"


def test_details_event_carries_the_messages_of_its_call() -> None:
    decoded = decode_logs((PAYLOADS / "otel-genai-latest" / "chat.logs.pb").read_bytes(), DEFAULT_LIMITS)
    spans, skipped = decoded.spans, decoded.skipped
    (call,) = [
        r
        for r in decode_protobuf((PAYLOADS / "otel-genai-latest" / "chat.pb").read_bytes())
        if "gen_ai.request.model" in r.attributes
    ]
    (event,) = [normalise_span(s, "p").observation for s in spans]
    assert skipped == 0 and event.kind is ObservationKind.EVENT
    assert event.name == "gen_ai.client.inference.operation.details"
    assert (event.trace_id, event.parent_id) == (call.trace_id, call.span_id)
    assert "You are a terse assistant." in (event.input or "")
    assert event.output == "Hello from the simulated upstream!"


def test_v1_events_input_history_and_choice() -> None:
    spans = decode_logs(
        (PAYLOADS / "otel-genai-v1" / "chat_tools.logs.pb").read_bytes(), DEFAULT_LIMITS
    ).spans
    events = [normalise_span(s, "p").observation for s in spans]
    assert [e.name for e in events].count("gen_ai.choice") == 2
    assert all((e.output is None) == (e.name != "gen_ai.choice") for e in events)  # history is input
    assert len({e.id for e in events}) == len(events)


def test_bad_and_oversized_log_exports() -> None:
    with pytest.raises(OtlpDecodeError):
        decode_logs(b"\xff\xff\xff", DEFAULT_LIMITS)
    body = (PAYLOADS / "otel-genai-v1" / "chat_tools.logs.pb").read_bytes()
    with pytest.raises(OtlpTooLarge):
        decode_logs(body, DecodeLimits(export_spans=2))
