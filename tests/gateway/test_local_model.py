"""The real local model (SmolLM2-135M-Instruct, in-process) through the gateway with the openai client."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import openai
import pytest

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
