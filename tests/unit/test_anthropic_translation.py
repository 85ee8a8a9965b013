"""Translation between Anthropic's Messages API and OpenAI's chat format keeps what both can express:
separate text blocks, images, disable_parallel_tool_use / parallel_tool_calls (pure functions)."""

from __future__ import annotations

from pilothouse.providers.anthropic_format import messages_to_openai_request, openai_to_messages_request
from pilothouse.providers.capabilities import IMAGES, unhonoured, unhonoured_native, without

IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGk="}}
TOOLS = [{"name": "look", "input_schema": {"type": "object"}}]


def test_blocks_images_and_serial_tools_survive_a_round_trip() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "system": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}, IMAGE]}
        ],
        "tools": TOOLS,
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    }
    openai_request = messages_to_openai_request(body)
    assert openai_request["parallel_tool_calls"] is False
    assert openai_request["messages"][1]["content"][2] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,aGk="},
    }
    back = openai_to_messages_request(openai_request, "m")
    assert back["system"] == "one\ntwo"
    assert back["messages"][0]["content"] == body["messages"][0]["content"]  # type: ignore[index]
    assert back["tool_choice"] == body["tool_choice"]


def test_a_text_only_model_is_refused_images_unless_they_are_dropped() -> None:
    request = messages_to_openai_request(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [IMAGE]}]}
    )
    assert unhonoured("chat", "local", request) == [IMAGES]
    assert unhonoured("chat", "openai", request) == []
    assert without(request, [IMAGES])["messages"][0]["content"] == []


def test_thinking_top_k_and_structured_output_cross_both_ways() -> None:
    """What the OpenAI shape can express is kept: thinking as reasoning_effort (by budget), top_k
    (OpenAI-compatible servers take it), output_config.format as response_format json_schema."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 3000},
        "top_k": 40,
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }
    request = messages_to_openai_request(body)
    assert (request["reasoning_effort"], request["top_k"]) == ("medium", 40)
    assert request["response_format"]["json_schema"]["schema"] == schema
    back = openai_to_messages_request(request, "m")
    assert back["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert back["max_tokens"] > 2048  # thinking needs room above its budget
    assert back["top_k"] == 40
    assert back["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    for budget, effort in ((1024, "low"), (2048, "medium"), (10_000, "high")):
        thinking = {"type": "enabled", "budget_tokens": budget}
        assert messages_to_openai_request({**body, "thinking": thinking})["reasoning_effort"] == effort
    assert "reasoning_effort" not in messages_to_openai_request({**body, "thinking": {"type": "disabled"}})


def test_what_a_translated_request_cannot_keep_is_named_as_the_client_sent_it() -> None:
    cached = {
        "model": "m",
        "max_tokens": 5,
        "system": [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    request = messages_to_openai_request(cached)
    names = unhonoured("chat", "local", request)  # SmolLM2 does not reason
    assert names == ["reasoning_effort"]
    assert unhonoured_native(cached, "local", names) == ["thinking", "cache_control"]
    assert unhonoured_native(cached, "openai", unhonoured("chat", "openai", request)) == ["cache_control"]
    assert unhonoured_native({"messages": []}, "openai", []) == []
    assert "reasoning_effort" not in without(request, names)
    # json_object has no Anthropic counterpart (json_schema does: output_config.format)
    assert unhonoured("chat", "anthropic", {"response_format": {"type": "json_object"}}) == [
        "response_format"
    ]
    assert unhonoured("chat", "anthropic", {"response_format": {"type": "json_schema"}}) == []
