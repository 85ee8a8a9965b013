"""The Responses API and legacy completions translations, the Responses stream events and the store of
responses: pure parts, no server."""

from __future__ import annotations

from typing import Any

import pytest

from pilothouse.gateway.completions_format import completions_to_chat
from pilothouse.gateway.responses_format import chat_request, chat_to_response, check_responses_request
from pilothouse.gateway.responses_stream import ResponsesStreamEncoder
from pilothouse.gateway.stored_responses import ResponseStore, StoredResponse
from pilothouse.gateway.validation import InvalidRequest


def test_input_items_become_one_chat_conversation() -> None:
    body: dict[str, Any] = {
        "model": "m",
        "instructions": "be brief",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:x"},
                ],
            },
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
            {"type": "reasoning", "summary": []},
            {"type": "function_call_output", "call_id": "a", "output": "1"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
        "reasoning": {"effort": "low"},
        "max_output_tokens": 50,
    }
    history = [{"role": "user", "content": "before"}, {"role": "assistant", "content": "earlier"}]
    request = chat_request(check_responses_request(body), history)
    roles = [m["role"] for m in request["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "tool"]
    assert request["messages"][3]["content"][1] == {"type": "image_url", "image_url": {"url": "data:x"}}
    assert [c["id"] for c in request["messages"][4]["tool_calls"]] == ["a", "b"]
    assert request["tools"][0]["function"] == {"name": "f", "parameters": {"type": "object"}, "strict": True}
    assert request["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert request["response_format"]["json_schema"]["name"] == "out"
    assert (request["reasoning_effort"], request["max_tokens"]) == ("low", 50)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": "x", "bogus": 1}, "bogus"),
        ({"model": "m", "input": "x", "background": True}, "background"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_requests_it_cannot_serve_are_400_naming_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_responses_request(body)
    assert (info.value.status, info.value.param) == (400, param)


def test_built_in_tools_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="only function tools"):
        chat_request({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, [])


def test_a_cut_answer_is_incomplete_with_its_usage() -> None:
    chat = {
        "choices": [{"message": {"content": "hi", "tool_calls": None}, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }
    response = chat_to_response(chat, {"model": "m"}, "resp_1", 0)
    assert response["status"] == "incomplete" and response["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert response["usage"]["output_tokens_details"] == {"reasoning_tokens": 1}
    assert response["usage"]["total_tokens"] == 5


def test_stream_events_from_text_then_a_tool_call() -> None:
    encoder = ResponsesStreamEncoder({"model": "m"}, "resp_1", 0)
    events = encoder.start()
    for delta in ({"content": "a"}, {"content": "b"}):
        events += encoder.feed({"choices": [{"delta": delta}]})
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"q":'}}
    events += encoder.feed({"choices": [{"delta": {"tool_calls": [call]}}]})
    more = {"index": 0, "function": {"arguments": '"x"}'}}
    events += encoder.feed({"choices": [{"delta": {"tool_calls": [more]}, "finish_reason": "tool_calls"}]})
    events += encoder.feed({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    events += encoder.finish()
    assert [kind for kind, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event["sequence_number"] for _, event in events] == list(range(len(events)))
    final = events[-1][1]["response"]
    assert final["output"][0]["content"][0]["text"] == "ab"
    assert (final["output"][1]["call_id"], final["output"][1]["arguments"]) == ("c1", '{"q":"x"}')
    assert final["usage"]["total_tokens"] == 3


def test_streamed_reasoning_is_a_reasoning_item_before_the_message() -> None:
    encoder = ResponsesStreamEncoder({"model": "m"}, "resp_1", 0)
    events = encoder.start()
    for delta in ({"reasoning_content": "think"}, {"reasoning_content": "ing"}, {"content": "answer"}):
        events += encoder.feed({"choices": [{"delta": delta}]})
    events += encoder.finish()
    kinds = [kind for kind, _ in events]
    assert kinds[2:9] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]
    output = events[-1][1]["response"]["output"]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "thinking"}]
    assert output[1]["content"][0]["text"] == "answer"


def test_stored_responses_are_per_project_and_bounded() -> None:
    now = [0.0]
    store = ResponseStore(max_count=3, max_bytes=10_000, ttl_s=60, clock=lambda: now[0])

    def stored(n: int, text: str = "x") -> StoredResponse:
        return StoredResponse({"id": f"resp_{n}", "output": text}, [{"role": "user", "content": text}])

    assert store.put("p", stored(1)) and store.put("q", stored(2))
    assert store.get("q", "resp_1") is None  # another project's
    for n in range(3, 9):  # q floods the store: it loses its own oldest, p keeps its one
        store.put("q", stored(n))
    assert store.get("p", "resp_1") is not None and store.get("q", "resp_2") is None and len(store) == 3
    assert not store.put("p", stored(9, "x" * 20_000))  # larger than the whole store
    now[0] = 61.0
    assert store.get("p", "resp_1") is None
    store.expire()
    assert len(store) == 0 and store.bytes == 0


def test_legacy_completions_refuse_what_a_chat_model_cannot_do() -> None:
    request = completions_to_chat({"model": "m", "prompt": ["say"], "stop": "\n"})
    assert request["messages"] == [{"role": "user", "content": "say"}] and request["max_tokens"] == 16
    for extra in ({"echo": True}, {"suffix": "x"}, {"best_of": 2}, {"logprobs": 1}, {"prompt": [1, 2]}):
        with pytest.raises(InvalidRequest) as info:
            completions_to_chat({"model": "m", "prompt": "x", **extra})
        assert info.value.param == next(iter(extra))
