"""An error about the translated request names the field the client sent: Anthropic's
``output_config.format`` and the Responses API's ``text.format``, not ``response_format``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from pilothouse.gateway import GatewayError
from pilothouse.gateway.client_names import MESSAGES_FORMAT, RESPONSES_FORMAT, renamed, renamed_text
from pilothouse.server.errors import ApiError
from pilothouse.testing import SimulatedUpstream
from tests.gateway.conftest import start_gateway

UNENFORCEABLE = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
ASK: Any = [{"role": "user", "content": "Three tags."}]


def test_each_response_format_path_becomes_the_surfaces_field() -> None:
    said = "response_format.json_schema.schema uses what the local model cannot enforce: uniqueItems"
    assert renamed_text(said, MESSAGES_FORMAT).startswith("output_config.format.schema uses what")
    assert renamed_text(said, RESPONSES_FORMAT).startswith("text.format.schema uses what")
    assert renamed_text("response_format.json_schema must be an object", RESPONSES_FORMAT) == (
        "text.format must be an object"
    )
    assert renamed_text("response_format (JSON mode) and tools", MESSAGES_FORMAT) == (
        "output_config.format (JSON mode) and tools"
    )
    assert (
        renamed_text("previous_response_id not found", RESPONSES_FORMAT) == "previous_response_id not found"
    )


def test_a_renamed_error_keeps_its_class_status_code_and_headers() -> None:
    error = ApiError(400, "response_format.type must be json_schema", param="response_format", code="c")
    error.headers = {"x-pilothouse-trace-id": "t"}
    told = renamed(error, RESPONSES_FORMAT)
    assert isinstance(told, ApiError) and str(told) == told.message == "text.format.type must be json_schema"
    assert (told.status, told.code, told.param, told.headers) == (400, "c", "text.format", error.headers)
    assert error.message == "response_format.type must be json_schema"  # the original is left alone
    untouched = GatewayError(429, "slow down")
    assert renamed(untouched, MESSAGES_FORMAT) is untouched


@pytest.mark.skipif(importlib.util.find_spec("llguidance") is None, reason="the local extra is not installed")
def test_the_local_models_schema_refusal_names_the_clients_own_field(
    tmp_path: Path, upstream: SimulatedUpstream
) -> None:
    """The schema is checked before the model is loaded, so no model is converted here."""
    smol = {
        "name": "smollm2",
        "provider": "local",
        "model": "smollm2",
        "options": {"cache_dir": str(tmp_path)},
    }
    gw = start_gateway(tmp_path, upstream, [smol])
    try:
        chat = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
        with pytest.raises(
            openai.BadRequestError, match=r"response_format\.json_schema\.schema uses .*uniqueItems"
        ):
            chat.chat.completions.create(
                model="smollm2",
                messages=ASK,
                max_tokens=8,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "t", "schema": UNENFORCEABLE},
                },
            )
        text: Any = {"format": {"type": "json_schema", "name": "t", "schema": UNENFORCEABLE}}
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as refused:
                chat.responses.create(model="smollm2", input="Three tags.", text=text, stream=stream)
            assert "text.format.schema uses what the local model cannot enforce" in str(refused.value)
            assert "response_format" not in str(refused.value)

        claude = anthropic.Anthropic(base_url=gw.server.base_url, api_key=gw.key, max_retries=0)
        config: Any = {"format": {"type": "json_schema", "schema": UNENFORCEABLE}}
        with pytest.raises(anthropic.BadRequestError) as refused_too:
            claude.messages.create(model="smollm2", max_tokens=8, messages=ASK, output_config=config)
        assert "output_config.format.schema uses what the local model cannot enforce" in str(
            refused_too.value
        )
        assert "response_format" not in str(refused_too.value)
        with (
            pytest.raises(anthropic.BadRequestError, match=r"output_config\.format\.schema uses"),
            claude.messages.stream(
                model="smollm2", max_tokens=8, messages=ASK, output_config=config
            ) as events,
        ):
            list(events)
    finally:
        gw.server.stop()
