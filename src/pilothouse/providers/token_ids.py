"""Token-id inputs of embeddings requests: LangChain's ``OpenAIEmbeddings`` sends ``cl100k_base``
token ids, not text. A local embedding model reads text, so the ids are decoded first, offline only:
with a tiktoken vocabulary file already on this machine (the deployment's ``token_vocabulary``
option, else tiktoken's own cache of ``cl100k_base``). Nothing is ever downloaded; without a file the
request is a 400 saying so. The file format is tiktoken's: one ``<base64 token bytes> <id>`` a line."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from pilothouse.providers.base import ProviderError

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SPECIAL = {
    100257: "<|endoftext|>",
    100258: "<|fim_prefix|>",
    100259: "<|fim_middle|>",
    100260: "<|fim_suffix|>",
    100276: "<|endofprompt|>",
}
MAX_VOCABULARY_BYTES = 64 * 1024 * 1024


def is_token_input(value: Any) -> bool:
    """Whether an embeddings ``input`` is token ids: one array of integers, or arrays of them."""
    if not isinstance(value, list) or not value:
        return False
    rows = value if isinstance(value[0], list) else [value]
    return all(
        isinstance(row, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in row)
        for row in rows
    )


def tiktoken_cache_file() -> Path | None:
    """Where tiktoken keeps ``cl100k_base`` once it has downloaded it (None: not on this machine)."""
    folder = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    folder = folder or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    path = Path(folder) / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    return path if path.is_file() else None


@functools.lru_cache(maxsize=4)
def load_vocabulary(path: str) -> dict[int, bytes]:
    """Token id -> bytes, from a tiktoken vocabulary file."""
    file = Path(path)
    if file.stat().st_size > MAX_VOCABULARY_BYTES:
        raise ProviderError(500, f"the token vocabulary {path} is larger than a vocabulary can be")
    vocabulary: dict[int, bytes] = {}
    try:
        for line in file.read_bytes().splitlines():
            if line.strip():
                token, rank = line.split()
                vocabulary[int(rank)] = base64.b64decode(token, validate=True)
    except (ValueError, binascii.Error):
        raise ProviderError(500, f"the token vocabulary {path} is not a tiktoken vocabulary file") from None
    return vocabulary


def decode_token_inputs(value: list[Any], vocabulary_path: str | None) -> list[str]:
    """The texts of token-id inputs; a 400 when no vocabulary is on this machine or an id is unknown."""
    path = vocabulary_path or tiktoken_cache_file()
    if path is None:
        raise ProviderError(
            400,
            "'input' holds token ids, which this local embedding model can read only by decoding them "
            "with the cl100k_base vocabulary, and no copy is on the server (the deployment's "
            "token_vocabulary option, or tiktoken's cache; it is never downloaded). Send text instead "
            "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False)).",
            kind="invalid_request_error",
            code="token_ids_not_decodable",
        )
    vocabulary = load_vocabulary(str(path))
    rows = value if isinstance(value[0], list) else [value]
    texts = []
    for index, row in enumerate(rows):
        pieces = []
        for token in row:
            piece = vocabulary.get(token)
            if piece is None:
                special = CL100K_SPECIAL.get(token)
                if special is None:
                    raise ProviderError(
                        400,
                        f"'input[{index}]' holds the unknown token id {token}",
                        kind="invalid_request_error",
                    )
                piece = special.encode()
            pieces.append(piece)
        texts.append(b"".join(pieces).decode("utf-8", errors="replace"))
    return texts
