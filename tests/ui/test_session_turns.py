"""Issue 23 item 5: a session shows the user's turns, not only the assistant's: the turn of an app whose
root span carries no text is its model calls' input and output, a Responses or completions request
reads as the user's message, and a turn of tool results keeps the user's question."""

from __future__ import annotations

import orjson

from pilothouse.domain.traces import Observation, ObservationKind, SpanRecord, TraceAttributes, Usage
from pilothouse.store.analytics import AnalyticsQueries
from pilothouse.store.sql import SqlStore
from pilothouse.ui.format import chat_messages, last_turn


def test_a_turn_without_root_text_reads_its_model_calls(store: SqlStore) -> None:
    start = 1_700_000_000 * 10**9
    trace = "e" * 32
    root = Observation(trace, "1" * 16, "agent", start, start + 10**9)  # no input, no output
    question = [{"role": "user", "content": "Where is my parcel?"}]
    calls = [
        Observation(
            trace,
            f"{i + 2:016x}",
            "chat",
            start + i,
            start + 10**8,
            kind=ObservationKind.GENERATION,
            parent_id=root.id,
            usage=Usage(input=5, output=5),
            input=orjson.dumps(question).decode(),
            output=answer,
        )
        for i, answer in enumerate(["let me look", "It is in Oslo."])
    ]
    attrs = TraceAttributes(session_id="s")
    store.write_spans([SpanRecord("p", o, attrs) for o in (root, *calls)])
    (turn,), more = AnalyticsQueries(store).session_traces("p", "s")
    assert not more
    asked = last_turn(chat_messages(turn.input, default_role="user"))
    assert [(m.role, m.parts[0].text) for m in asked] == [("user", "Where is my parcel?")]
    assert turn.output == "It is in Oslo."  # the last call's answer


def test_requests_of_other_apis_read_as_the_users_message() -> None:
    responses = chat_messages(
        orjson.dumps({"model": "m", "input": "Hi there", "instructions": "Be kind"}).decode()
    )
    assert responses is not None and [m.role for m in responses] == ["system", "user"]
    assert responses[1].parts[0].text == "Hi there"
    completions = chat_messages(orjson.dumps({"model": "m", "prompt": "Once upon"}).decode())
    assert completions is not None and completions[0].role == "user"


def test_a_turn_of_tool_results_keeps_the_users_question() -> None:
    messages = chat_messages(
        orjson.dumps(
            [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "18 C"},
            ]
        ).decode()
    )
    assert [m.role for m in last_turn(messages)] == ["user", "tool"]
