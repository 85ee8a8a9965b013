"""Bring your own weights: a Hugging Face folder holding a sequence-classification model (an NLI model,
HHEM, MiniCheck, or any (premise, hypothesis) -> label classifier) or a token-classification one (a
LettuceDetect-style span detector) used as the detector.

**Token classifiers** (the folder's ``config.json`` names a ``...ForTokenClassification`` architecture)
read (``template`` with the context in it, the response) as one pair and label each response token;
the response's score is 1 - the largest P(hallucinated) of its tokens, and runs of tokens whose
P(hallucinated) exceeds 1 - threshold are the spans (character offsets from the tokenizer, which must
be a fast one). A context too long for ``max_length`` is read in overlapping windows, each with the
whole response, and a token's P(hallucinated) is its largest over the windows (a token is supported
only if every window supports it: LettuceDetect's rule). Which output means "hallucinated": the
complement of ``supported_label`` when given, else the label whose name says hallucinated /
unsupported / unfaithful / inconsistent, else index 1 (LettuceDetect's 0 = supported, 1 =
hallucinated).

**Sequence classifiers**: each sentence of the response is classified against the context (premise =
context, hypothesis = the sentence); the response's score is its least supported sentence's, and
sentences below the threshold are the unsupported spans. Which output means "supported":
``supported_label`` when given (a label name or index), else the label whose name says
entailment/consistent/supported/faithful, else index 1 of a two-label model; a one-output model's
sigmoid is the score. Loaded from the folder only (``local_files_only``); models whose folder carries
its own code (HHEM) need ``trust_remote_code``, which runs that code: only for folders you trust."""

from __future__ import annotations

import importlib
import threading
import unicodedata
from pathlib import Path
from typing import Any

from pilothouse.domain.faithfulness import SUPPORTED, UNSUPPORTED, UnsupportedSpan, Verdict
from pilothouse.quality.hallucination.features import confidence, sentences

_SUPPORTED_NAMES = ("entail", "consistent", "support", "faithful", "factual")
_HALLUCINATED_NAMES = ("hallucinat", "unsupported", "unfaithful", "inconsistent", "not_supported")
WINDOW_STRIDE = 64  # tokens of context two windows share, so a sentence cut by one is whole in the next
WINDOWS_PER_PASS = 8  # windows (or sentences) read in one forward pass (memory grows with the batch)
MAX_WINDOWS = 64  # a longer context is read up to here (the verdict's reason says so)
# characters of context given to the tokenizer at most, per token of a window: it makes every window of
# a context before keeping MAX_WINDOWS (a 10 MB context took 1.6 GB and 34 s of CPU to read 64 windows)
CHARS_PER_TOKEN = 32


def supported_index(id2label: dict[int, str], supported_label: str | int | None = None) -> int | None:
    """Which output index means "supported" (None: a single-output model, read through a sigmoid)."""
    labels = {int(k): str(v) for k, v in id2label.items()}
    if len(labels) <= 1:
        return None
    if supported_label is not None:
        if isinstance(supported_label, int) or str(supported_label).isdigit():
            index = int(supported_label)
            if index not in labels:
                raise ValueError(f"supported_label {index} is not an output index (0..{len(labels) - 1})")
            return index
        for index, name in labels.items():
            if name.lower() == str(supported_label).lower():
                return index
        raise ValueError(f"supported_label {supported_label!r} is not one of {sorted(labels.values())}")
    for index, name in sorted(labels.items()):
        lowered = name.lower()
        if any(word in lowered for word in _SUPPORTED_NAMES) and not lowered.startswith(("not", "non", "in")):
            return index
    if len(labels) == 2:
        return 1
    raise ValueError(
        f"cannot tell which label means supported among {sorted(labels.values())}: set supported_label"
    )


def hallucinated_index(id2label: dict[int, str], supported_label: str | int | None = None) -> int:
    """Which output of a two-label token classifier means "hallucinated"."""
    labels = {int(k): str(v) for k, v in id2label.items()}
    if len(labels) != 2:
        raise ValueError(
            f"a token-classification detector needs two labels (supported, hallucinated), not {len(labels)}"
        )
    if supported_label is not None:
        return 1 - int(supported_index(labels, supported_label) or 0)
    for index, name in sorted(labels.items()):
        if any(word in name.lower() for word in _HALLUCINATED_NAMES):
            return index
    return 1


def _whole_characters(text: str, end: int) -> int:
    """``end`` moved past the combining marks (accents, variation selectors) that belong to the
    character before it (a tokenizer that strips accents ends a token's offsets before its marks: a
    span would cut "é", written e + U+0301, in two)."""
    while end < len(text) and unicodedata.category(text[end]) in ("Mn", "Me"):
        end += 1
    return end


class HuggingFaceDetector:
    """A detector from a local sequence- or token-classification model folder."""

    def __init__(
        self,
        folder: str | Path,
        *,
        threshold: float = 0.5,
        supported_label: str | int | None = None,
        trust_remote_code: bool = False,
        max_length: int = 512,
        threads: int | None = None,
        template: str = "{context}",
    ) -> None:
        self.folder = Path(folder).expanduser()
        if not (self.folder / "config.json").is_file():
            raise ValueError(f"{self.folder} is not a Hugging Face model folder (no config.json)")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, not {threshold}")
        self.threshold, self.supported_label = threshold, supported_label
        self.trust_remote_code, self.max_length, self.threads = trust_remote_code, max_length, threads
        if "{context}" not in template:
            raise ValueError("template must hold {context}, where the context goes")
        self.template = template
        self.token_level = False  # known once loaded: the folder's architecture decides
        self._model: Any = None
        self._tokenizer: Any = None
        self._index: int | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model and tokenizer from the folder (offline)."""
        with self._lock:
            if self._model is not None:
                return
            torch = importlib.import_module("torch")  # by name: heavy, and Any to mypy
            transformers = importlib.import_module("transformers")
            if self.threads:
                torch.set_num_threads(self.threads)
            options = {"local_files_only": True, "trust_remote_code": self.trust_remote_code}
            config = transformers.AutoConfig.from_pretrained(self.folder, **options)
            token_level = any(a.endswith("ForTokenClassification") for a in config.architectures or ())
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.folder, **options)
            if token_level and not getattr(tokenizer, "is_fast", False):
                raise ValueError(
                    f"{self.folder}: a token-classification detector needs a fast tokenizer "
                    "(tokenizer.json) for the spans' character offsets"
                )
            kind = "AutoModelForTokenClassification" if token_level else "AutoModelForSequenceClassification"
            model = getattr(transformers, kind).from_pretrained(self.folder, **options).eval()
            labels = dict(model.config.id2label)
            if token_level:
                self._index = hallucinated_index(labels, self.supported_label)
            else:
                self._index = supported_index(labels, self.supported_label)
            # what the model can read: its positions (RoBERTa's count two it never uses: its tokenizer's
            # model_max_length says 512) and its tokenizer's limit, when they are known
            for limit in (getattr(config, "max_position_embeddings", None), tokenizer.model_max_length):
                if isinstance(limit, int) and 8 < limit < 1_000_000:
                    self.max_length = min(self.max_length, limit)
            self._tokenizer, self.token_level, self._model = tokenizer, token_level, model

    def sentence_scores(self, response: str, context: str) -> list[tuple[int, int, float]]:
        """(start, end, P(supported)) for each sentence of the response."""
        self.load()
        torch = importlib.import_module("torch")

        parts = sentences(response) or []
        if not parts:
            return []
        encoded = self._tokenizer(
            [context] * len(parts),
            [p.text for p in parts],
            truncation="only_first",
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        probs: list[float] = []
        with self._lock, torch.inference_mode():
            for first in range(0, len(parts), WINDOWS_PER_PASS):  # a bounded batch: memory stays flat
                batch = {k: v[first : first + WINDOWS_PER_PASS] for k, v in encoded.items()}
                logits = self._model(**batch).logits.float()
                if self._index is None:
                    probs.extend(torch.sigmoid(logits[:, 0]).tolist())
                else:
                    probs.extend(torch.softmax(logits, -1)[:, self._index].tolist())
        return [(p.start, p.end, float(v)) for p, v in zip(parts, probs, strict=True)]

    def token_scores(self, response: str, context: str) -> tuple[list[tuple[int, int, float]], int]:
        """(start, end, P(hallucinated)) of each response token (a token classifier), and the number of
        context windows read."""
        self.load()
        torch = importlib.import_module("torch")
        try:
            encoded = self._tokenizer(
                self.template.replace("{context}", context[: self.context_chars]),
                response,
                truncation="only_first",
                max_length=self.max_length,
                stride=min(WINDOW_STRIDE, self.max_length // 4),
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
                padding=True,
                return_tensors="pt",
            )
        except Exception as exc:  # the tokenizer's own error: the response leaves no room for context
            raise ValueError(
                f"the response is too long for the model's {self.max_length} tokens with any context: {exc}"
            ) from None
        offsets = encoded.pop("offset_mapping").tolist()[:MAX_WINDOWS]
        encoded.pop("overflow_to_sample_mapping", None)
        windows = len(offsets)
        probs: list[list[float]] = []
        with self._lock, torch.inference_mode():
            for first in range(0, windows, WINDOWS_PER_PASS):
                part = {k: v[first : min(first + WINDOWS_PER_PASS, windows)] for k, v in encoded.items()}
                logits = self._model(**part).logits.float()
                probs.extend(torch.softmax(logits, -1)[..., self._index].tolist())
        scored: list[tuple[int, int, float]] = []
        for window in range(windows):
            answer = [j for j, part in enumerate(encoded.sequence_ids(window)) if part == 1]
            answer = [j for j in answer if offsets[window][j][0] < offsets[window][j][1]]
            if window == 0:
                scored = [(*offsets[0][j], probs[0][j]) for j in answer]
                continue
            for k, j in enumerate(answer[: len(scored)]):  # the same tokens in every window
                a, b, p = scored[k]
                scored[k] = (a, b, max(p, probs[window][j]))
        return [(int(a), int(b), float(p)) for a, b, p in scored], windows

    @property
    def context_chars(self) -> int:
        """The characters of a context a token classifier reads at most (past them the context is cut
        before tokenising: MAX_WINDOWS windows of it at CHARS_PER_TOKEN characters a token)."""
        return MAX_WINDOWS * self.max_length * CHARS_PER_TOKEN

    def _detect_tokens(self, response: str, context: str, source: str) -> Verdict:
        scored, windows = self.token_scores(response, context)
        if not scored:
            return Verdict(1.0, SUPPORTED, (), source, 1.0, {}, "empty response: nothing to support")
        worst = max(p for _, _, p in scored)
        flag = 1.0 - self.threshold
        runs: list[list[float]] = []  # [start, end, max p] of flagged tokens next to each other
        for a, b, p in scored:
            if p <= flag:
                continue
            if runs and not response[int(runs[-1][1]) : a].strip():
                runs[-1][1], runs[-1][2] = b, max(runs[-1][2], p)
            else:
                runs.append([a, b, p])
        spans = tuple(
            UnsupportedSpan(int(a), end, response[int(a) : end], "tokens classified as unsupported", p)
            for a, b, p in runs
            for end in (_whole_characters(response, int(b)),)
        )
        score = 1.0 - worst
        return Verdict(
            score,
            SUPPORTED if score >= self.threshold else UNSUPPORTED,
            spans,
            source,
            confidence(score, self.threshold),
            {"max_token_hallucination": worst, "tokens": float(len(scored)), "windows": float(windows)},
            f"{len(spans)} span(s) of tokens above P(hallucinated) {flag:g}"
            + (f" (context read in {windows} windows)" if windows > 1 else "")
            + (f"; the context past {MAX_WINDOWS} windows was not read" if windows >= MAX_WINDOWS else "")
            + (
                f"; the context past {self.context_chars:,} characters was not read"
                if len(context) > self.context_chars
                else ""
            ),
        )

    def detect(self, response: str, context: str) -> Verdict:
        """The verdict: a token classifier's spans, or the least supported sentence's score with the
        sentences under the threshold as spans."""
        self.load()
        source = f"hf:{self.folder.name}"
        if self.token_level:
            return self._detect_tokens(response, context, source)
        scored = self.sentence_scores(response, context)
        if not scored:
            return Verdict(1.0, SUPPORTED, (), source, 1.0, {}, "empty response: nothing to support")
        score = min(s for _, _, s in scored)
        spans = tuple(
            UnsupportedSpan(a, b, response[a:b], "sentence not entailed by the context", 1.0 - s)
            for a, b, s in scored
            if s < self.threshold
        )
        label = SUPPORTED if score >= self.threshold else UNSUPPORTED
        return Verdict(
            score,
            label,
            spans,
            source,
            confidence(score, self.threshold),
            {"min_sentence": score, "sentences": float(len(scored))},
            f"{len(spans)} of {len(scored)} sentence(s) below {self.threshold}",
        )
