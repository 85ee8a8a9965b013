"""Translation between Anthropic's Messages API and OpenAI's chat format keeps what both can express:
separate text blocks, images, disable_parallel_tool_use / parallel_tool_calls (pure functions)."""

from __future__ import annotations

from pilothouse.providers.anthropic_format import messages_to_openai_request, openai_to_messages_request
from pilothouse.providers.capabilities import IMAGES, unhonoured, without

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
