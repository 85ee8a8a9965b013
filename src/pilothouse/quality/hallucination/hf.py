"""Bring your own weights: a Hugging Face folder holding a sequence-classification model (an NLI model,
HHEM, MiniCheck, or any (premise, hypothesis) -> label classifier) used as the detector.

Each sentence of the response is classified against the context (premise = context, hypothesis = the
sentence); the response's score is its least supported sentence's, and sentences below the threshold
are the unsupported spans. Which output means "supported": ``supported_label`` when given (a label name
or index), else the label whose name says entailment/consistent/supported/faithful, else index 1 of a
two-label model; a one-output model's sigmoid is the score. Loaded from the folder only
(``local_files_only``); models whose folder carries its own code (HHEM) need ``trust_remote_code``,
which runs that code: only for folders you trust."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

from pilothouse.domain.faithfulness import SUPPORTED, UNSUPPORTED, UnsupportedSpan, Verdict
from pilothouse.quality.hallucination.features import confidence, sentences

_SUPPORTED_NAMES = ("entail", "consistent", "support", "faithful", "factual")


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


class HuggingFaceDetector:
    """A detector from a local sequence-classification model folder."""

    def __init__(
        self,
        folder: str | Path,
        *,
        threshold: float = 0.5,
        supported_label: str | int | None = None,
        trust_remote_code: bool = False,
        max_length: int = 512,
        threads: int | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser()
        if not (self.folder / "config.json").is_file():
            raise ValueError(f"{self.folder} is not a Hugging Face model folder (no config.json)")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, not {threshold}")
        self.threshold, self.supported_label = threshold, supported_label
        self.trust_remote_code, self.max_length, self.threads = trust_remote_code, max_length, threads
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
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.folder, **options)
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                self.folder, **options
            ).eval()
            self._index = supported_index(dict(model.config.id2label), self.supported_label)
            self._model = model

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
        with self._lock, torch.inference_mode():
            logits = self._model(**encoded).logits.float()
        if self._index is None:
            probs = torch.sigmoid(logits[:, 0])
        else:
            probs = torch.softmax(logits, -1)[:, self._index]
        return [(p.start, p.end, float(v)) for p, v in zip(parts, probs.tolist(), strict=True)]

    def detect(self, response: str, context: str) -> Verdict:
        """The verdict: the least supported sentence's score; sentences under the threshold are spans."""
        scored = self.sentence_scores(response, context)
        source = f"hf:{self.folder.name}"
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
