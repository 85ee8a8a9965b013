"""Tool calling for local models whose chat template has no tools: the prompt and the parser."""

from __future__ import annotations

import json

from pilothouse.providers.local_tools import parse_tool_calls, template_knows_tools, with_tool_instructions

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def test_tools_are_described_in_the_system_message() -> None:
    added = with_tool_instructions([{"role": "user", "content": "hi"}], TOOLS)
    assert added[0]["role"] == "system" and '"name":"get_weather"' in added[0]["content"]
    assert "<tool_call>" in added[0]["content"] and added[1] == {"role": "user", "content": "hi"}
    merged = with_tool_instructions(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}], TOOLS
    )
    assert len(merged) == 2 and merged[0]["content"].startswith("Be brief.\n\n")


def test_templates_with_and_without_tools() -> None:
    assert template_knows_tools("{% if tools %}{{ tools | tojson }}{% endif %}")
    assert not template_knows_tools("{% for message in messages %}{{ message.content }}{% endfor %}")
    assert not template_knows_tools(None)


def test_tool_calls_are_parsed_and_the_rest_is_content() -> None:
    text = (
        'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}\n</tool_call>'
    )
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    only_call = parse_tool_calls('<tool_call>{"name": "f", "arguments": {}}</tool_call>')
    assert only_call[0] is None and only_call[1][0]["function"]["arguments"] == "{}"


def test_malformed_blocks_stay_text() -> None:
    for text in (
        "The weather in Paris is mild.",
        "<tool_call>{not json}</tool_call>",
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": "f"',  # cut off
    ):
        assert parse_tool_calls(text) == (text, [])
