"""The real local model (SmolLM2-135M-Instruct, in-process) through the gateway with the openai client."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import anthropic
import openai
import pytest
from pydantic import BaseModel, Field

from pilothouse.testing import SimulatedUpstream
from tests.gateway.conftest import start_gateway

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None, reason="the local model stack is not installed"
    ),
]
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.mark.usefixtures("smollm2_first_load")  # converted once per session, into model_cache
def test_smollm2_through_the_gateway(tmp_path: Path, upstream: SimulatedUpstream, model_cache: Path) -> None:
    models = [
        {
            "name": "smollm2",
            "provider": "local",
            "model": "smollm2",
            "options": {"cache_dir": str(model_cache)},
        },
        {"name": "minilm", "provider": "local", "model": "all-minilm-l6-v2"},
    ]
    gw = start_gateway(tmp_path, upstream, models)
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, timeout=120)
        reply = client.chat.completions.create(
            model="smollm2", messages=QUESTION, max_tokens=12, temperature=0
        )
        text = reply.choices[0].message.content or ""
        assert text.strip() and reply.usage is not None
        assert 0 < reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 5
        chunks = list(
            client.chat.completions.create(
                model="smollm2",
                messages=QUESTION,
                max_tokens=12,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == text  # greedy decoding: the same answer streamed
        traces = gw.traces(2)
        for trace in traces:
            generation = trace["observations"][0]
            assert generation["provider"] == "local" and generation["output"] == text
            assert generation["usage"]["input"] == reply.usage.prompt_tokens
            assert generation["usage"]["output"] == reply.usage.completion_tokens
        assert any(t["observations"][0]["ttft_ms"] for t in traces)
        embedded = client.embeddings.create(model="minilm", input=["hello world", "bonjour le monde"])
        assert [len(d.embedding) for d in embedded.data] == [384, 384] and embedded.usage.prompt_tokens > 4
    finally:
        gw.server.stop()


class City(BaseModel):
    city: str = Field(max_length=16)
    continent: Literal["Europe", "Asia", "Africa", "America", "Oceania"]


ASK_JSON = [{"role": "user", "content": "Give the capital of France as JSON."}]


@pytest.mark.skipif(importlib.util.find_spec("llguidance") is None, reason="JSON mode needs llguidance")
@pytest.mark.usefixtures("smollm2_first_load")
def test_json_mode_and_n_on_the_local_model_through_every_surface(
    tmp_path: Path, upstream: SimulatedUpstream, model_cache: Path
) -> None:
    """The gateway honours on the local model what it used to refuse: structured output (the openai
    client's parse, the Responses API's text.format, Anthropic's output_config) by constrained
    decoding, and n choices, streamed or not; what it cannot enforce is a 400 naming it."""
    smol = {
        "name": "smollm2",
        "provider": "local",
        "model": "smollm2",
        "options": {"cache_dir": str(model_cache)},
    }
    gw = start_gateway(tmp_path, upstream, [smol])
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, timeout=120, max_retries=0)
        parsed = client.chat.completions.parse(
            model="smollm2",
            messages=ASK_JSON,
            response_format=City,
            max_tokens=32,  # type: ignore[arg-type]
        )
        assert isinstance(parsed.choices[0].message.parsed, City)
        answer = client.responses.parse(
            model="smollm2", input="The capital of France, as JSON.", text_format=City
        )
        assert isinstance(answer.output_parsed, City)
        claude_style = anthropic.Anthropic(base_url=gw.server.base_url, api_key=gw.key, max_retries=0)
        message = claude_style.messages.parse(
            model="smollm2",
            max_tokens=32,
            messages=ASK_JSON,
            output_format=City,  # type: ignore[arg-type]
        )
        assert isinstance(message.parsed_output, City)

        one = client.chat.completions.create(model="smollm2", messages=ASK_JSON, max_tokens=6)
        two = client.chat.completions.create(model="smollm2", messages=ASK_JSON, max_tokens=6, n=2)
        assert [c.index for c in two.choices] == [0, 1] and two.usage is not None and one.usage is not None
        assert two.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt once, each choice's tokens
        assert two.usage.completion_tokens == 2 * one.usage.completion_tokens
        chunks = list(
            client.chat.completions.create(
                model="smollm2",
                messages=ASK_JSON,
                max_tokens=6,
                n=2,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        streamed = {0: "", 1: ""}
        for chunk in chunks:
            for choice in chunk.choices:
                streamed[choice.index] += choice.delta.content or ""
        assert streamed == {i: two.choices[i].message.content for i in (0, 1)}  # greedy: the same answers
        assert (
            chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == two.usage.completion_tokens
        )

        with pytest.raises(openai.BadRequestError, match="uniqueItems"):
            client.chat.completions.create(
                model="smollm2",
                messages=ASK_JSON,
                response_format={  # type: ignore[typeddict-item]
                    "type": "json_schema",
                    "json_schema": {"name": "tags", "schema": {"type": "array", "uniqueItems": True}},
                },
            )
        with pytest.raises(openai.BadRequestError, match="1 to 8"):
            client.chat.completions.create(model="smollm2", messages=ASK_JSON, n=9)
        traces = gw.traces(8)
        outputs = [t["observations"][0]["output"] for t in traces]
        assert any("city" in str(o) for o in outputs)  # the constrained answers are what is traced
    finally:
        gw.server.stop()
