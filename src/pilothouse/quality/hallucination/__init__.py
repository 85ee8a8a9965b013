"""Hallucination (faithfulness) detection: is a response supported by its context?

``detect(response, context) -> Verdict`` runs the local detector (SmolLM2-135M's mean log-likelihood of
the response given the context, BARTScore-style; its scale and threshold, and the choice of this feature
among others such as PMI and lexical novelty, come from SummEdits' evaluation split), on the CPU with
the weights installed packages ship; the unsupported spans are words (names and numbers the context
lacks, words the model found unlikely given it: :mod:`.spans`). :class:`Cascade` sends the uncertain
middle to an LLM judge; :class:`HuggingFaceDetector` uses a local sequence- or token-classification
model folder instead. The eval scorer ``hallucination`` lives in
:mod:`pilothouse.quality.hallucination.scorer`. See docs/hallucination.md. Heavy modules (torch,
transformers) load on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pilothouse.domain.faithfulness import SUPPORTED, UNSUPPORTED, UnsupportedSpan, Verdict

if TYPE_CHECKING:
    from pilothouse.quality.hallucination.cascade import Cascade, CascadeStats
    from pilothouse.quality.hallucination.detector import Detector, default_detector, detect
    from pilothouse.quality.hallucination.hf import HuggingFaceDetector

__all__ = [
    "SUPPORTED",
    "UNSUPPORTED",
    "Cascade",
    "CascadeStats",
    "Detector",
    "HuggingFaceDetector",
    "UnsupportedSpan",
    "Verdict",
    "default_detector",
    "detect",
]

_HOME = {
    "Cascade": "cascade",
    "CascadeStats": "cascade",
    "Detector": "detector",
    "default_detector": "detector",
    "detect": "detector",
    "HuggingFaceDetector": "hf",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'pilothouse.quality.hallucination' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pilothouse.quality.hallucination.{home}"), name)
    globals()[name] = value
    return value
