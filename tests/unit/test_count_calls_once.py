"""``count_calls_once`` within one export: two spans of one call in a trace count once, whatever the
export's other traces hold; calls alone in their traces are never paired, even with the same texts."""

from __future__ import annotations

from pilothouse.domain.duplicates import COUNTED_IN, count_calls_once
from pilothouse.domain.traces import Observation, ObservationKind, SpanRecord, TraceAttributes, Usage

START = 1_700_000_000 * 10**9


def call(trace: str, span: str, parent: str | None = None, response_id: str | None = None) -> SpanRecord:
    """A model call with the same model, texts and times as every other one made here."""
    o = Observation(
        trace,
        span,
        "chat",
        START,
        START + 10**9,
        kind=ObservationKind.GENERATION,
        parent_id=parent,
        model="m",
        input="the same question",
        output="the same answer",
        usage=Usage(input=10, output=5),
        attributes={"gen_ai.response.id": response_id} if response_id else {},
    )
    return SpanRecord("p", o, TraceAttributes())


def counted(records: list[SpanRecord]) -> list[bool]:
    return [not r.observation.usage.is_empty for r in records]


def test_only_spans_of_one_trace_are_one_call() -> None:
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    records = [
        call(b, "1" * 16),  # alone in its trace: the same texts and times as A's, still its own call
        call(a, "2" * 16),
        call(a, "3" * 16),  # A's sibling twin: the same model, texts, overlapping times
        call(c, "4" * 16, response_id="r1"),
        call(b.replace("b", "d"), "5" * 16, response_id="r1"),  # the same response id, another trace
    ]
    assert count_calls_once(records) == 1
    assert counted(records) == [True, True, False, True, True]
    assert records[2].observation.attributes[COUNTED_IN] == "2" * 16


def test_a_child_call_and_a_response_id_pair_within_a_trace() -> None:
    a, b = "a" * 32, "b" * 32
    records = [
        call(a, "1" * 16),
        call(a, "2" * 16, parent="1" * 16),  # a child of the call: its other instrumentation
        call(b, "3" * 16, parent="9" * 16, response_id="r2"),
        call(b, "4" * 16, parent="8" * 16, response_id="r2"),
        call("e" * 32, "5" * 16),
    ]
    assert count_calls_once(records) == 2
    assert counted(records) == [True, False, True, False, True]


def test_an_export_of_single_call_traces_is_left_as_it_is() -> None:
    records = [call(f"{i:032x}", f"{i:016x}") for i in range(1, 50)]
    assert count_calls_once(records) == 0
    assert all(counted(records)) and not any(COUNTED_IN in r.observation.attributes for r in records)
