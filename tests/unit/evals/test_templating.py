"""Prompt templates: ``{{ name }}`` placeholders, dotted paths, clear errors for missing variables."""

from __future__ import annotations

from typing import Any

import pytest

from pilothouse.evals.templating import (
    TemplateError,
    render,
    render_messages,
    render_value,
    resolve,
    template_variables,
)


def test_placeholders_with_and_without_spaces_and_dotted_paths() -> None:
    variables = {"city": "Lisbon", "user": {"name": "Ada", "langs": ["pt", "en"]}}
    assert render("Weather in {{city}}?", variables) == "Weather in Lisbon?"
    assert render("Hi {{ user.name }}, {{user.langs.1}}", variables) == "Hi Ada, en"
    assert render("no placeholders { here }", variables) == "no placeholders { here }"


def test_values_are_written_as_text() -> None:
    variables = {"n": 3, "x": 2.5, "flag": True, "none": None, "obj": {"a": [1, "é"]}, "items": [1, 2]}
    assert render("{{n}} {{x}} {{flag}} [{{none}}]", variables) == "3 2.5 true []"
    assert render("{{obj}} {{items}}", variables) == '{"a": [1, "é"]} [1, 2]'


def test_inserted_values_are_not_rendered_again() -> None:
    assert render("Q: {{question}}", {"question": "what is {{secret}}?"}) == "Q: what is {{secret}}?"


def test_missing_variable_names_the_variable_and_what_there_is() -> None:
    with pytest.raises(TemplateError) as info:
        render("Hello {{ customer }}", {"name": "Ada", "city": "Lisbon"})
    assert info.value.variable == "customer"
    assert "'customer'" in str(info.value) and "city, name" in str(info.value)
    with pytest.raises(TemplateError, match=r"'user\.email'"):
        render("{{user.email}}", {"user": {"name": "Ada"}})
    with pytest.raises(TemplateError, match=r"'items\.5'"):
        render("{{items.5}}", {"items": [1, 2]})


def test_template_variables_in_order_of_first_use() -> None:
    assert template_variables("{{b}} {{ a.x }} {{b}}") == ["b", "a.x"]


def test_resolve_keeps_the_type_of_a_lone_placeholder() -> None:
    variables = {"expected": 42, "keywords": ["a", "b"], "name": "Ada"}
    assert resolve("{{expected}}", variables) == 42
    assert resolve(" {{ keywords }} ", variables) == ["a", "b"]
    assert resolve("n={{expected}}", variables) == "n=42"
    assert render_value({"value": ["{{name}}", "x", 3]}, variables) == {"value": ["Ada", "x", 3]}


def test_render_messages_renders_strings_and_content_parts_without_mutating() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You answer about {{topic}}."},
        {
            "role": "user",
            "name": "u1",
            "content": [
                {"type": "text", "text": "Describe {{ topic }} in {{n}} words."},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://img.example/{{img}}.png", "detail": "low"},
                },
                {"type": "input_audio", "input_audio": {"data": "{{not_rendered}}"}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
    ]
    rendered = render_messages(messages, {"topic": "tides", "n": 20, "img": "moon"})
    assert rendered[0] == {"role": "system", "content": "You answer about tides."}
    parts = rendered[1]["content"]
    assert rendered[1]["name"] == "u1"
    assert parts[0] == {"type": "text", "text": "Describe tides in 20 words."}
    assert parts[1]["image_url"] == {"url": "https://img.example/moon.png", "detail": "low"}
    assert parts[2] == {"type": "input_audio", "input_audio": {"data": "{{not_rendered}}"}}
    assert rendered[2] == messages[2]
    assert messages[0]["content"] == "You answer about {{topic}}."  # the input is untouched
    with pytest.raises(TemplateError, match="'topic'"):
        render_messages(messages, {})
